//! A problem in the configuration: what is wrong, where, and how to fix it.

use std::fmt;

use super::node::Loc;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Diagnostic {
    pub loc: Option<Loc>,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(loc: Option<Loc>, message: impl Into<String>) -> Self {
        Diagnostic {
            loc,
            message: message.into(),
            hint: None,
        }
    }

    pub fn at(loc: &Loc, message: impl Into<String>) -> Self {
        Self::new(Some(loc.clone()), message)
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "file": self.loc.as_ref().map(|l| l.file.to_string()),
            "line": self.loc.as_ref().map(|l| l.line),
            "column": self.loc.as_ref().map(|l| l.col),
            "message": self.message,
            "hint": self.hint,
        })
    }
}

/// `unknown field 'replcas' at regions/cuba.yaml:12:5 — did you mean 'replicas'?`
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(loc) = &self.loc {
            write!(f, " at {loc}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " — {hint}")?;
        }
        Ok(())
    }
}

/// A hint naming the closest candidate to `word` ("did you mean 'x'?"), else `otherwise()`.
pub fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    otherwise: impl FnOnce() -> String,
) -> String {
    match did_you_mean(word, candidates) {
        Some(s) => format!("did you mean '{s}'?"),
        None => otherwise(),
    }
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
