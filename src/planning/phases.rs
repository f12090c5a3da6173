//! The planning phases: a configurable list, each a skill name, optionally marked optional.

use std::fmt;

/// One phase of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// The skill name, run as `/<name> <description>`.
    pub name: String,
    /// An optional phase is offered, but finalizing before it is the expected path.
    pub optional: bool,
}

/// The default list; `?` marks an optional phase.
pub const DEFAULT_PHASES: &str = "office-hours,plan-ceo-review,plan-eng-review,plan-design-review?";

/// A phase list that is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhaseListError {
    #[error("the phase list is empty")]
    Empty,
    #[error(
        "phase name {0:?} is not valid: use lower-case letters, digits and dashes (a skill name)"
    )]
    BadName(String),
    #[error("phase {0:?} appears twice")]
    Duplicate(String),
}

/// Parses `a,b,c?` into phases.
pub fn parse_phases(spec: &str) -> Result<Vec<Phase>, PhaseListError> {
    let mut phases: Vec<Phase> = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, optional) = match item.strip_suffix('?') {
            Some(name) => (name.trim(), true),
            None => (item, false),
        };
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid {
            return Err(PhaseListError::BadName(name.to_string()));
        }
        if phases.iter().any(|p| p.name == name) {
            return Err(PhaseListError::Duplicate(name.to_string()));
        }
        phases.push(Phase {
            name: name.to_string(),
            optional,
        });
    }
    if phases.is_empty() {
        return Err(PhaseListError::Empty);
    }
    Ok(phases)
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.name, if self.optional { "?" } else { "" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_list() {
        let phases = parse_phases(DEFAULT_PHASES).unwrap();
        let names: Vec<_> = phases.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "office-hours",
                "plan-ceo-review",
                "plan-eng-review",
                "plan-design-review?"
            ]
        );
    }

    #[test]
    fn bad_lists_are_refused() {
        assert_eq!(parse_phases(" , "), Err(PhaseListError::Empty));
        assert_eq!(
            parse_phases("a,../b"),
            Err(PhaseListError::BadName("../b".into()))
        );
        assert_eq!(
            parse_phases("a,a?"),
            Err(PhaseListError::Duplicate("a".into()))
        );
        assert_eq!(parse_phases("?"), Err(PhaseListError::BadName("".into())));
    }
}
