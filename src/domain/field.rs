//! Broken rules of input fields: what validation reports, and what
//! `VALIDATION` errors carry in `extensions.fields`.

use serde::Serialize;

/// One broken rule of one input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The input field's GraphQL name, e.g. `email` or `cars[2].vin`.
    pub field: String,
    pub code: FieldCode,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: FieldCode, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            message: message.into(),
        }
    }

    /// The same problem, reported on another input field (a rule shared
    /// by fields of different names).
    pub fn renamed(self, field: &str) -> Self {
        Self {
            field: field.to_owned(),
            ..self
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FieldCode {
    FieldMissing,
    Invalid,
    TooShort,
    TooLong,
    OutOfRange,
    Taken,
    TooCommon,
    TooSimilar,
}

impl FieldCode {
    /// As clients see it (`extensions.fields[].code`, `FieldError.code`).
    pub fn name(self) -> &'static str {
        match self {
            FieldCode::FieldMissing => "FIELD_MISSING",
            FieldCode::Invalid => "INVALID",
            FieldCode::TooShort => "TOO_SHORT",
            FieldCode::TooLong => "TOO_LONG",
            FieldCode::OutOfRange => "OUT_OF_RANGE",
            FieldCode::Taken => "TAKEN",
            FieldCode::TooCommon => "TOO_COMMON",
            FieldCode::TooSimilar => "TOO_SIMILAR",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FieldCode;

    #[test]
    fn names_are_what_serde_writes() {
        use FieldCode::*;
        for code in [
            FieldMissing,
            Invalid,
            TooShort,
            TooLong,
            OutOfRange,
            Taken,
            TooCommon,
            TooSimilar,
        ] {
            assert_eq!(
                serde_json::to_value(code).expect("serialises"),
                serde_json::Value::from(code.name())
            );
        }
    }
}
