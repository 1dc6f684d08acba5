//! The sign-up form and its rules (API.md, "Validation (signUp)").
//!
//! [`SignUpForm::validate`] turns raw input into a [`NewUser`] or the full
//! list of broken rules. Uniqueness (`TAKEN`) needs the database and is
//! checked by the service.

use std::str::FromStr;
use std::sync::Arc;

use chrono::Datelike;
use email_address::EmailAddress;

use super::{has_control_chars, match_key, Checked, Password, PasswordPolicy};
use super::{FieldCode, FieldError};

pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 150;
pub const PERSON_NAME_MAX: usize = 150;
pub const EMAIL_MAX: usize = 254;
pub const MAX_CARS: usize = 20;
pub const CAR_TEXT_MAX: usize = 64;
pub const PLATE_MAX: usize = 16;
pub const FIRST_CAR_YEAR: i32 = 1886;

/// Raw sign-up input, as the client sent it.
#[derive(Debug, Clone, Default)]
pub struct SignUpForm {
    pub username: String,
    pub password: Password,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub name: Option<String>,
    pub surname: Option<String>,
    pub second_name: Option<String>,
    pub cars: Option<Vec<CarForm>>,
}

#[derive(Debug, Clone, Default)]
pub struct CarForm {
    pub brand: String,
    pub model: String,
    pub year: Option<i32>,
    pub color: Option<String>,
    pub license_plate: Option<String>,
    pub vin: Option<String>,
}

/// A sign-up that passed every rule that needs no database.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub username_key: String,
    pub password: Password,
    pub email: Option<String>,
    pub email_key: Option<String>,
    pub phone: Option<String>,
    pub name: Option<String>,
    pub surname: Option<String>,
    pub second_name: Option<String>,
    pub cars: Vec<NewCar>,
    _checked: Checked,
}

impl NewUser {
    /// The keys this user signs in by (username and e-mail share one
    /// namespace), each once.
    pub fn login_keys(&self) -> Vec<&str> {
        let mut keys = vec![self.username_key.as_str()];
        if let Some(email) = self
            .email_key
            .as_deref()
            .filter(|e| *e != self.username_key)
        {
            keys.push(email);
        }
        keys
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCar {
    pub brand: String,
    pub model: String,
    pub year: Option<i32>,
    pub color: Option<String>,
    pub license_plate: Option<String>,
    pub vin: Option<String>,
    _checked: Checked,
}

/// What the rules depend on besides the form itself.
#[derive(Clone)]
pub struct SignUpRules {
    pub phone_region: Option<phonenumber::country::Id>,
    pub password_policy: Arc<PasswordPolicy>,
    /// Words no password may resemble (product, company names).
    pub context_words: Vec<String>,
}

impl SignUpRules {
    pub fn new(phone_region: Option<&str>) -> Self {
        Self {
            phone_region: phone_region
                .and_then(|r| phonenumber::country::Id::from_str(&r.to_ascii_uppercase()).ok()),
            password_policy: Arc::new(PasswordPolicy::new()),
            context_words: Vec::new(),
        }
    }

    pub fn with_context_words(mut self, words: &[String]) -> Self {
        self.context_words = words
            .iter()
            .map(|w| w.trim().to_owned())
            .filter(|w| !w.is_empty())
            .collect();
        self
    }
}

/// Collects broken rules across the whole form.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<FieldError>);

impl Problems {
    pub(super) fn add(&mut self, field: &str, code: FieldCode, message: impl Into<String>) {
        self.0.push(FieldError::new(field, code, message));
    }
}

impl SignUpRules {
    /// The password rules for a new password of an existing user: it must
    /// not resemble their username, e-mail or names either. `field` names
    /// the input field in what is reported.
    pub fn check_new_password(
        &self,
        field: &str,
        password: &Password,
        user: &super::account::User,
    ) -> Vec<FieldError> {
        let attributes: Vec<&str> = [
            Some(user.username.as_str()),
            user.email.as_deref(),
            user.name.as_deref(),
            user.surname.as_deref(),
            user.second_name.as_deref(),
        ]
        .into_iter()
        .flatten()
        .chain(self.context_words.iter().map(String::as_str))
        .collect();
        self.password_policy
            .check(password.expose(), &attributes)
            .into_iter()
            .map(|(code, message)| FieldError::new(field, code, message))
            .collect()
    }
}

impl CarForm {
    /// The sign-up rules of one car, reported under its own field names
    /// (`brand`, `vin`, ...).
    pub fn validate(self) -> Result<NewCar, Vec<FieldError>> {
        let mut problems = Problems::default();
        let next_year = chrono::Utc::now().year() + 1;
        match check_car("", self, next_year, &mut problems) {
            Some(car) if problems.0.is_empty() => Ok(car),
            _ => Err(problems.0),
        }
    }
}

impl SignUpForm {
    pub fn validate(self, rules: &SignUpRules) -> Result<NewUser, Vec<FieldError>> {
        self.check(rules, true)
    }

    /// Every rule but the password's: an imported account brings a hash,
    /// and no password to check (`authql import`).
    pub fn validate_without_password(
        self,
        rules: &SignUpRules,
    ) -> Result<NewUser, Vec<FieldError>> {
        self.check(rules, false)
    }

    fn check(self, rules: &SignUpRules, with_password: bool) -> Result<NewUser, Vec<FieldError>> {
        let mut problems = Problems::default();
        let username = check_username(&self.username, &mut problems);
        let email =
            optional_text(self.email.as_deref()).and_then(|e| check_email(e, &mut problems));
        let phone = optional_text(self.phone.as_deref())
            .and_then(|p| check_phone(p, rules.phone_region, &mut problems));
        let name = person_name("name", self.name.as_deref(), &mut problems);
        let surname = person_name("surname", self.surname.as_deref(), &mut problems);
        let second_name = person_name("secondName", self.second_name.as_deref(), &mut problems);

        let attributes: Vec<&str> = [
            Some(self.username.as_str()),
            email.as_deref(),
            name.as_deref(),
            surname.as_deref(),
            second_name.as_deref(),
        ]
        .into_iter()
        .flatten()
        .chain(rules.context_words.iter().map(String::as_str))
        .collect();
        if with_password {
            for (code, message) in rules
                .password_policy
                .check(self.password.expose(), &attributes)
            {
                problems.add("password", code, message);
            }
        }

        let cars = check_cars(self.cars.unwrap_or_default(), &mut problems);

        if !problems.0.is_empty() {
            return Err(problems.0);
        }
        let username = username.unwrap_or_default();
        Ok(NewUser {
            username_key: match_key(&username),
            username,
            password: self.password,
            email_key: email.as_deref().map(match_key),
            email,
            phone,
            name,
            surname,
            second_name,
            cars,
            _checked: Checked(()),
        })
    }
}

/// Django's UnicodeUsernameValidator: letters and digits in the Unicode sense
/// and `.@+-_`. Stored exactly as given.
fn check_username(raw: &str, problems: &mut Problems) -> Option<String> {
    if raw.trim().is_empty() {
        problems.add("username", FieldCode::FieldMissing, "username is required");
        return None;
    }
    let chars = raw.chars().count();
    if chars < USERNAME_MIN {
        problems.add(
            "username",
            FieldCode::TooShort,
            format!("username must be at least {USERNAME_MIN} characters"),
        );
    }
    if chars > USERNAME_MAX {
        problems.add(
            "username",
            FieldCode::TooLong,
            format!("username must be at most {USERNAME_MAX} characters"),
        );
    }
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '.' | '@' | '+' | '-' | '_');
    if !raw.chars().all(allowed) {
        problems.add(
            "username",
            FieldCode::Invalid,
            "username may contain only letters, digits and . @ + - _",
        );
    }
    Some(raw.to_owned())
}

/// Trimmed, with the domain lower-cased. A dotted domain is required: an
/// address like `root@localhost` cannot receive mail from the internet.
pub(super) fn check_email(raw: &str, problems: &mut Problems) -> Option<String> {
    if has_control_chars(raw) {
        problems.add(
            "email",
            FieldCode::Invalid,
            "e-mail contains control characters",
        );
        return None;
    }
    if raw.chars().count() > EMAIL_MAX {
        problems.add(
            "email",
            FieldCode::TooLong,
            format!("e-mail must be at most {EMAIL_MAX} characters"),
        );
        return None;
    }
    let options = email_address::Options::default()
        .without_display_text()
        .without_domain_literal()
        .with_required_tld();
    match EmailAddress::parse_with_options(raw, options) {
        Ok(address) => Some(format!(
            "{}@{}",
            address.local_part(),
            address.domain().to_lowercase()
        )),
        Err(_) => {
            problems.add("email", FieldCode::Invalid, "not a valid e-mail address");
            None
        }
    }
}

/// E.164 through Google's libphonenumber metadata.
pub(super) fn check_phone(
    raw: &str,
    region: Option<phonenumber::country::Id>,
    problems: &mut Problems,
) -> Option<String> {
    if has_control_chars(raw) {
        problems.add(
            "phone",
            FieldCode::Invalid,
            "phone contains control characters",
        );
        return None;
    }
    if !raw.starts_with('+') && region.is_none() {
        problems.add(
            "phone",
            FieldCode::Invalid,
            "phone number must start with + and the country code",
        );
        return None;
    }
    match phonenumber::parse(region, raw) {
        Ok(number) if phonenumber::is_valid(&number) => {
            Some(number.format().mode(phonenumber::Mode::E164).to_string())
        }
        _ => {
            problems.add("phone", FieldCode::Invalid, "not a valid phone number");
            None
        }
    }
}

pub(super) fn person_name(
    field: &str,
    raw: Option<&str>,
    problems: &mut Problems,
) -> Option<String> {
    let value = optional_text(raw)?;
    text_rules(field, value, PERSON_NAME_MAX, problems).then(|| value.to_owned())
}

/// The rules every free text field shares: at most `max` characters, no
/// control characters (NUL among them, which PostgreSQL cannot store).
/// Reports what is broken; true when nothing is.
fn text_rules(field: &str, value: &str, max: usize, problems: &mut Problems) -> bool {
    let mut ok = true;
    if value.chars().count() > max {
        let name = field.rsplit('.').next().unwrap_or(field);
        problems.add(
            field,
            FieldCode::TooLong,
            format!("{name} must be at most {max} characters"),
        );
        ok = false;
    }
    if has_control_chars(value) {
        problems.add(
            field,
            FieldCode::Invalid,
            "control characters are not allowed",
        );
        ok = false;
    }
    ok
}

/// Whether a user with `existing` cars may add one more (`addCar`), by the
/// rule sign-up applies to its list.
pub fn room_for_another_car(existing: usize) -> Result<(), FieldError> {
    if existing >= MAX_CARS {
        return Err(too_many_cars());
    }
    Ok(())
}

fn too_many_cars() -> FieldError {
    FieldError::new(
        "cars",
        FieldCode::TooLong,
        format!("at most {MAX_CARS} cars can be registered"),
    )
}

fn check_cars(cars: Vec<CarForm>, problems: &mut Problems) -> Vec<NewCar> {
    if cars.len() > MAX_CARS {
        problems.0.push(too_many_cars());
        // Reporting on each of thousands of cars helps nobody.
        return Vec::new();
    }
    let next_year = chrono::Utc::now().year() + 1;
    cars.into_iter()
        .enumerate()
        .filter_map(|(i, car)| check_car(&format!("cars[{i}]."), car, next_year, problems))
        .collect()
}

/// One car's rules, its fields reported as `{prefix}{name}`.
fn check_car(
    prefix: &str,
    car: CarForm,
    next_year: i32,
    problems: &mut Problems,
) -> Option<NewCar> {
    let before = problems.0.len();
    let field = |name: &str| format!("{prefix}{name}");
    let mut required = |name: &str, raw: &str| -> String {
        let value = raw.trim();
        if value.is_empty() {
            problems.add(
                &field(name),
                FieldCode::FieldMissing,
                format!("{name} is required"),
            );
        } else {
            text_rules(&field(name), value, CAR_TEXT_MAX, problems);
        }
        value.to_owned()
    };
    let brand = required("brand", &car.brand);
    let model = required("model", &car.model);

    if let Some(year) = car.year {
        if !(FIRST_CAR_YEAR..=next_year).contains(&year) {
            problems.add(
                &field("year"),
                FieldCode::OutOfRange,
                format!("year must be from {FIRST_CAR_YEAR} to {next_year}"),
            );
        }
    }
    let color = optional_text(car.color.as_deref()).map(str::to_owned);
    if let Some(color) = &color {
        text_rules(&field("color"), color, CAR_TEXT_MAX, problems);
    }
    let license_plate = optional_text(car.license_plate.as_deref()).map(str::to_owned);
    if let Some(plate) = &license_plate {
        text_rules(&field("licensePlate"), plate, PLATE_MAX, problems);
    }
    // ISO 3779: 17 characters, digits and capital letters except I, O, Q.
    let vin = optional_text(car.vin.as_deref()).map(str::to_ascii_uppercase);
    if let Some(vin) = &vin {
        let valid = vin.chars().count() == 17
            && vin.chars().all(|c| {
                c.is_ascii_digit() || (c.is_ascii_uppercase() && !matches!(c, 'I' | 'O' | 'Q'))
            });
        if !valid {
            problems.add(
                &field("vin"),
                FieldCode::Invalid,
                "vin must be 17 letters and digits without I, O or Q",
            );
        }
    }
    (problems.0.len() == before).then_some(NewCar {
        brand,
        model,
        year: car.year,
        color,
        license_plate,
        vin,
        _checked: Checked(()),
    })
}

/// Trimmed text, or `None` for absent or blank optional input.
pub(super) fn optional_text(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> SignUpForm {
        SignUpForm {
            username: "ivan.petrov".into(),
            password: Password::new("correct horse battery"),
            ..Default::default()
        }
    }

    fn rules(region: Option<&str>) -> SignUpRules {
        SignUpRules::new(region)
    }

    fn problems(f: SignUpForm) -> Vec<(String, FieldCode)> {
        f.validate(&rules(None))
            .expect_err("should be refused")
            .into_iter()
            .map(|e| (e.field, e.code))
            .collect()
    }

    #[test]
    fn minimal_form_is_accepted() {
        let user = form().validate(&rules(None)).expect("valid");
        assert_eq!(user.username, "ivan.petrov");
        assert_eq!(user.email, None);
        assert!(user.cars.is_empty());
    }

    #[test]
    fn unicode_usernames_and_limits() {
        let mut f = form();
        f.username = "Иван_Петров".into();
        assert!(f.validate(&rules(None)).is_ok());
        let mut f = form();
        f.username = "ab".into();
        assert_eq!(problems(f), vec![("username".into(), FieldCode::TooShort)]);
        let mut f = form();
        f.username = "й".repeat(151);
        assert_eq!(problems(f), vec![("username".into(), FieldCode::TooLong)]);
        let mut f = form();
        f.username = "й".repeat(150);
        assert!(
            f.validate(&rules(None)).is_ok(),
            "150 characters (300 bytes) is fine"
        );
        let mut f = form();
        f.username = "bad name!".into();
        assert_eq!(problems(f), vec![("username".into(), FieldCode::Invalid)]);
        let mut f = form();
        f.username = "  ".into();
        assert_eq!(
            problems(f),
            vec![("username".into(), FieldCode::FieldMissing)]
        );
    }

    #[test]
    fn email_is_trimmed_and_domain_lowercased() {
        let mut f = form();
        f.email = Some("  Ivan.P@Example.COM ".into());
        let user = f.validate(&rules(None)).expect("valid");
        assert_eq!(user.email.as_deref(), Some("Ivan.P@example.com"));
        assert_eq!(user.email_key.as_deref(), Some("ivan.p@example.com"));
        for bad in [
            "no-at-sign",
            "a@b",
            "Ivan <ivan@example.com>",
            "a@@example.com",
        ] {
            let mut f = form();
            f.email = Some(bad.into());
            assert_eq!(
                problems(f),
                vec![("email".into(), FieldCode::Invalid)],
                "{bad}"
            );
        }
        let mut f = form();
        f.email = Some(String::new());
        assert_eq!(
            f.validate(&rules(None)).expect("blank is absent").email,
            None
        );
    }

    #[test]
    fn phones_become_e164() {
        let mut f = form();
        f.phone = Some("+7 (999) 123-45-67".into());
        assert_eq!(
            f.validate(&rules(None)).expect("valid").phone.as_deref(),
            Some("+79991234567")
        );
        let mut f = form();
        f.phone = Some("8 999 123 45 67".into());
        assert_eq!(
            f.clone()
                .validate(&rules(Some("RU")))
                .expect("valid")
                .phone
                .as_deref(),
            Some("+79991234567")
        );
        assert_eq!(problems(f), vec![("phone".into(), FieldCode::Invalid)]);
        let mut f = form();
        f.phone = Some("+7 123".into());
        assert_eq!(problems(f), vec![("phone".into(), FieldCode::Invalid)]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let f = SignUpForm {
            username: "x".into(),
            password: Password::new("123"),
            email: Some("nope".into()),
            name: Some("a".repeat(151)),
            cars: Some(vec![
                CarForm {
                    brand: "Lada".into(),
                    model: "Vesta".into(),
                    ..Default::default()
                },
                CarForm {
                    brand: " ".into(),
                    model: "M".repeat(65),
                    year: Some(1885),
                    vin: Some("1HGCM82633A00435O".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let got = problems(f);
        for expected in [
            ("username", FieldCode::TooShort),
            ("password", FieldCode::TooShort),
            ("password", FieldCode::TooCommon),
            ("email", FieldCode::Invalid),
            ("name", FieldCode::TooLong),
            ("cars[1].brand", FieldCode::FieldMissing),
            ("cars[1].model", FieldCode::TooLong),
            ("cars[1].year", FieldCode::OutOfRange),
            ("cars[1].vin", FieldCode::Invalid),
        ] {
            assert!(
                got.contains(&(expected.0.to_owned(), expected.1)),
                "missing {expected:?} in {got:?}"
            );
        }
        assert!(!got.iter().any(|(f, _)| f.starts_with("cars[0]")));
    }

    #[test]
    fn too_many_cars() {
        let mut f = form();
        f.cars = Some(vec![
            CarForm {
                brand: "B".into(),
                model: "M".into(),
                ..Default::default()
            };
            21
        ]);
        assert_eq!(problems(f), vec![("cars".into(), FieldCode::TooLong)]);
    }

    #[test]
    fn cars_keep_their_order_and_vins_are_normalised() {
        let mut f = form();
        f.cars = Some(
            ["A", "B", "C"]
                .iter()
                .map(|b| CarForm {
                    brand: (*b).into(),
                    model: "M".into(),
                    vin: Some("1hgcm82633a004352".into()),
                    ..Default::default()
                })
                .collect(),
        );
        let user = f.validate(&rules(None)).expect("valid");
        let brands: Vec<_> = user.cars.iter().map(|c| c.brand.as_str()).collect();
        assert_eq!(brands, ["A", "B", "C"]);
        assert_eq!(user.cars[0].vin.as_deref(), Some("1HGCM82633A004352"));
    }
}

/// Property tests: no input makes validation panic, and whatever it accepts
/// obeys the rules. `PROPTEST_CASES` raises the case count (CI: 2,000).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a-zA-Z0-9._@+\\- ]{0,40}",
            "\\PC{0,200}",
            "[\\u{0}-\\u{1f}\\u{200b}\\u{feff} ]{0,10}",
            "[+0-9 ()\\-]{0,20}",
        ]
    }

    fn car() -> impl Strategy<Value = CarForm> {
        (
            text(),
            text(),
            any::<Option<i32>>(),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
        )
            .prop_map(|(brand, model, year, color, license_plate, vin)| CarForm {
                brand,
                model,
                year,
                color,
                license_plate,
                vin,
            })
    }

    #[test]
    fn validation_never_panics_and_accepted_input_obeys_the_rules() {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(2_000);
        // Built once: the common-password set is the expensive part.
        let policy = Arc::new(PasswordPolicy::new());
        let rules: Vec<SignUpRules> = [None, Some("RU"), Some("US")]
            .into_iter()
            .map(|region| SignUpRules {
                phone_region: region.and_then(|r| phonenumber::country::Id::from_str(r).ok()),
                password_policy: policy.clone(),
                context_words: vec!["authql".into()],
            })
            .collect();
        proptest!(ProptestConfig::with_cases(cases), |(
            username in text(),
            password in text(),
            email in proptest::option::of(text()),
            phone in proptest::option::of(text()),
            name in proptest::option::of(text()),
            region in 0..3usize,
            cars in proptest::option::of(proptest::collection::vec(car(), 0..23)),
        )| {
            let form = SignUpForm {
                username, password: Password::new(password), email, phone, name,
                surname: None, second_name: None, cars,
            };
            match form.validate(&rules[region]) {
                Ok(user) => {
                    let len = user.username.chars().count();
                    prop_assert!((USERNAME_MIN..=USERNAME_MAX).contains(&len));
                    let pw = user.password.expose().chars().count();
                    prop_assert!((8..=256).contains(&pw));
                    prop_assert!(user.phone.as_deref().is_none_or(|p| p.starts_with('+')));
                    prop_assert!(user.email.as_deref().is_none_or(|e| e.contains('@')));
                    prop_assert!(user.cars.len() <= MAX_CARS);
                }
                Err(problems) => prop_assert!(!problems.is_empty()),
            }
        });
    }
}
