//! Macro expansion: `%{tx.anomaly_score}`, `%{MATCHED_VAR}`, `%{rule.id}` in action values and
//! operator arguments, parsed once at load time into a [`Template`].

/// A string with macros, split at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text copied as is.
    Literal(Vec<u8>),
    /// `%{collection.key}` or `%{VARIABLE}`: the collection/variable name uppercased, the key
    /// lowercased (keys of TX and the request collections compare case-insensitively).
    Macro { name: String, key: Option<String> },
}

impl Template {
    /// Splits `text` at `%{...}`. An unterminated `%{` stays literal text, as in libmodsecurity.
    pub fn parse(text: &str) -> Template {
        let mut parts = Vec::new();
        let mut lit = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("%{") {
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else { break };
            lit.extend_from_slice(&rest.as_bytes()[..start]);
            let inner = &after[..end];
            if !lit.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut lit)));
            }
            let (name, key) = match inner.split_once(['.', ':']) {
                Some((n, k)) => (n, Some(k.to_ascii_lowercase())),
                None => (inner, None),
            };
            parts.push(Part::Macro {
                name: name.trim().to_ascii_uppercase(),
                key,
            });
            rest = &after[end + 1..];
        }
        lit.extend_from_slice(rest.as_bytes());
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Template { parts }
    }

    /// True when the text has at least one macro.
    pub fn has_macros(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Macro { .. }))
    }

    /// The text when there are no macros.
    pub fn literal(&self) -> Option<&[u8]> {
        match self.parts.as_slice() {
            [] => Some(b""),
            [Part::Literal(l)] => Some(l),
            _ => None,
        }
    }

    /// The macros: (name, key).
    pub fn macros(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.parts.iter().filter_map(|p| match p {
            Part::Macro { name, key } => Some((name.as_str(), key.as_deref())),
            Part::Literal(_) => None,
        })
    }

    /// The literal text before the first macro (all of it when there is none).
    pub fn literal_prefix(&self) -> &[u8] {
        match self.parts.first() {
            Some(Part::Literal(l)) => l,
            _ => b"",
        }
    }

    /// The parts (what the tests inspect; the engine expands with [`Template::expand_with`]).
    #[cfg(test)]
    fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Expands with `resolve(name, key)` giving a macro's value (None expands to nothing).
    pub fn expand_with(&self, resolve: impl FnMut(&str, Option<&str>, &mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        self.expand_into(&mut out, resolve);
        out
    }

    /// [`Template::expand_with`], appending to `out` (a buffer the caller reuses).
    pub fn expand_into(
        &self,
        out: &mut Vec<u8>,
        mut resolve: impl FnMut(&str, Option<&str>, &mut Vec<u8>),
    ) {
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.extend_from_slice(l),
                Part::Macro { name, key } => resolve(name, key.as_deref(), out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_macros_and_text() {
        let t = Template::parse("tx.%{rule.id}-OWASP=%{MATCHED_VAR}");
        assert_eq!(
            t.parts(),
            &[
                Part::Literal(b"tx.".to_vec()),
                Part::Macro {
                    name: "RULE".into(),
                    key: Some("id".into())
                },
                Part::Literal(b"-OWASP=".to_vec()),
                Part::Macro {
                    name: "MATCHED_VAR".into(),
                    key: None
                },
            ]
        );
        assert!(t.has_macros());
        let out = t.expand_with(|n, k, out| {
            out.extend_from_slice(format!("<{n}|{}>", k.unwrap_or("-")).as_bytes())
        });
        assert_eq!(out, b"tx.<RULE|id>-OWASP=<MATCHED_VAR|->");
    }

    #[test]
    fn plain_and_unterminated_text_is_literal() {
        assert_eq!(Template::parse("abc").literal(), Some(&b"abc"[..]));
        assert_eq!(Template::parse("a%{b").literal(), Some(&b"a%{b"[..]));
        assert_eq!(Template::parse("").literal(), Some(&b""[..]));
        let t = Template::parse("%{TX.Allowed_Methods}");
        assert_eq!(
            t.parts(),
            &[Part::Macro {
                name: "TX".into(),
                key: Some("allowed_methods".into())
            }]
        );
    }
}
