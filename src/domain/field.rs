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
