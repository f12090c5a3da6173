//! Typed reads of the environment (and of `planbot.toml`'s values, for their errors).

use super::*;

/// Typed reads of the environment; an empty variable counts as unset. `file` is the
/// `planbot.toml` the other values came from, named in errors about them.
pub(super) struct Env<'a> {
    pub(super) vars: &'a HashMap<String, String>,
    pub(super) file: Option<&'a Path>,
}

impl Env<'_> {
    pub(super) fn str(&self, name: &str) -> Option<&str> {
        non_empty(self.vars, name)
    }

    /// A number within `range`, from the environment, else the file, else `default`; an error
    /// names the variable, or the file and its key.
    pub(super) fn bounded<T>(
        &self,
        name: &str,
        from_file: Option<T>,
        range: std::ops::RangeInclusive<T>,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + Copy + fmt::Display,
        T::Err: fmt::Display,
    {
        let (value, setting) = match self.parse::<T>(name)? {
            Some(value) => (value, name.to_string()),
            None => match from_file {
                Some(value) => (value, self.file_key(name)),
                None => return Ok(default),
            },
        };
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(invalid(
                &setting,
                format!(
                    "{value} is out of range: it must be from {} to {}",
                    range.start(),
                    range.end()
                ),
            ))
        }
    }

    /// An amount of money: positive and finite, or unset.
    pub(super) fn amount(
        &self,
        name: &str,
        from_file: Option<f64>,
    ) -> Result<Option<f64>, ConfigError> {
        let (value, setting) = match self.parse::<f64>(name)? {
            Some(value) => (value, name.to_string()),
            None => match from_file {
                Some(value) => (value, self.file_key(name)),
                None => return Ok(None),
            },
        };
        if value.is_finite() && value > 0.0 {
            Ok(Some(value))
        } else {
            Err(invalid(
                &setting,
                format!("{value} is not an amount: it must be a positive number of USD"),
            ))
        }
    }

    /// How `name` is spelled in `planbot.toml`, with the file: `planbot.toml: max_turns`.
    pub(super) fn file_key(&self, name: &str) -> String {
        let key = name.trim_start_matches("PLANBOT_").to_ascii_lowercase();
        match self.file {
            Some(path) => format!("{}: {key}", path.display()),
            None => key,
        }
    }

    pub(super) fn path(&self, name: &str) -> Option<PathBuf> {
        self.str(name).map(PathBuf::from)
    }

    pub(super) fn list(&self, name: &str) -> Option<Vec<String>> {
        self.str(name).map(split_list)
    }

    /// A secret from `name`, or the file named by `file_var`, or systemd's credential
    /// `credential`; with the file it came from.
    pub(super) fn secret(
        &self,
        name: &str,
        file_var: &str,
        credential: &str,
    ) -> Result<(Option<Secret>, Option<PathBuf>), ConfigError> {
        let file = match (self.str(name), self.path(file_var)) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    file_var,
                    format!("set either {name} or {file_var}, not both"),
                ));
            }
            (Some(value), None) => return Ok((Some(Secret::new(value)), None)),
            (None, Some(path)) => Some((file_var.to_string(), path)),
            (None, None) => self
                .path("CREDENTIALS_DIRECTORY")
                .map(|dir| dir.join(credential))
                .filter(|path| path.exists())
                .map(|path| ("CREDENTIALS_DIRECTORY".to_string(), path)),
        };
        let Some((setting, path)) = file else {
            return Ok((None, None));
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| invalid(&setting, format!("cannot read {}: {e}", path.display())))?;
        let value = text.trim();
        if value.is_empty() {
            return Err(invalid(&setting, format!("{} is empty", path.display())));
        }
        Ok((Some(Secret::new(value)), Some(path)))
    }

    pub(super) fn parse<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T::Err: fmt::Display,
    {
        self.str(name)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|e| invalid(name, format!("{v:?} is not valid: {e}")))
            })
            .transpose()
    }
}
