//! Label and field selectors (k8s.io/apimachinery/pkg/labels and pkg/fields): the string syntax
//! of `?labelSelector=` / `?fieldSelector=`, conversion from a metav1 `LabelSelector`, and
//! matching.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

use crate::names;

/// Longest label or field selector accepted. kube-apiserver sets no bound of its own (its HTTP
/// server bounds the request line); this one holds wherever a selector comes from.
pub const MAX_SELECTOR_LEN: usize = 64 * 1024;

/// Most requirements (or field terms) one selector may have: every object a list or watch
/// reads is matched against each of them.
pub const MAX_REQUIREMENTS: usize = 100;

/// Why a selector was rejected. The messages are meant to be returned verbatim in a 400 Status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("invalid label key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("invalid label value {value:?} for key {key:?}: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("unable to parse requirement: found '{found}', expected: {expected}")]
    Unexpected {
        found: String,
        expected: &'static str,
    },
    #[error("unable to parse requirement: unbalanced parentheses in {0:?}")]
    UnbalancedParens(String),
    #[error(
        "unknown operator '{op}' after key {key:?}; expected one of =, ==, !=, in, notin, >, <"
    )]
    UnknownOperator { key: String, op: String },
    #[error("{op:?} is not a valid label selector operator (key {key:?})")]
    UnknownApiOperator { key: String, op: String },
    #[error("key {key:?}: for 'in', 'notin' operators, values set can't be empty")]
    EmptySet { key: String },
    #[error("key {key:?}: values set must be empty for exists and does not exist")]
    ValuesNotAllowed { key: String },
    #[error("key {key:?}: exact-match compatibility requires one single value")]
    NotSingleValue { key: String },
    #[error("key {key:?}: for 'Gt', 'Lt' operators, the value must be an integer, got {value:?}")]
    NotAnInteger { key: String, value: String },
    #[error("invalid field selector: can't understand '{0}'")]
    InvalidFieldTerm(String),
    #[error("invalid field selector value {value:?}: {reason}")]
    InvalidFieldValue { value: String, reason: &'static str },
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
    #[error("the selector is {0} bytes long: at most {MAX_SELECTOR_LEN} are allowed")]
    TooLong(usize),
    #[error("the selector has too many requirements: at most {MAX_REQUIREMENTS} are allowed")]
    TooManyRequirements,
}

/// A label requirement's operator (k8s.io/apimachinery/pkg/selection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One term of a label selector: `key <op> values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    op: Operator,
    /// Sorted and de-duplicated, so the string form is canonical.
    values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement with Kubernetes' validation (`labels.NewRequirement`).
    pub fn new(
        key: &str,
        op: Operator,
        values: impl IntoIterator<Item = String>,
    ) -> Result<Self, SelectorError> {
        let key_errs = names::qualified_name(key);
        if !key_errs.is_empty() {
            return Err(SelectorError::InvalidKey {
                key: key.into(),
                reason: key_errs.join("; "),
            });
        }
        let mut values: Vec<String> = values.into_iter().collect();
        let err_key = || key.to_string();
        match op {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(SelectorError::EmptySet { key: err_key() });
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                return Err(SelectorError::NotSingleValue { key: err_key() });
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(SelectorError::ValuesNotAllowed { key: err_key() });
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return Err(SelectorError::NotSingleValue { key: err_key() });
                }
                if values[0].parse::<i64>().is_err() {
                    return Err(SelectorError::NotAnInteger {
                        key: err_key(),
                        value: values[0].clone(),
                    });
                }
            }
            _ => {}
        }
        for v in &values {
            let errs = names::label_value(v);
            if !errs.is_empty() {
                return Err(SelectorError::InvalidValue {
                    key: err_key(),
                    value: v.clone(),
                    reason: errs.join("; "),
                });
            }
        }
        values.sort();
        values.dedup();
        Ok(Self {
            key: key.into(),
            op,
            values,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.op
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let actual = labels.get(&self.key);
        // Values are sorted (see `new`).
        let in_set = |v: &String| self.values.binary_search(v).is_ok();
        match self.op {
            Operator::Equals | Operator::DoubleEquals | Operator::In => actual.is_some_and(in_set),
            // Like Kubernetes: a missing label satisfies `!=` and `notin`.
            Operator::NotEquals | Operator::NotIn => !actual.is_some_and(in_set),
            Operator::Exists => actual.is_some(),
            Operator::DoesNotExist => actual.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(actual), Some(bound)) = (actual, self.values.first()) else {
                    return false;
                };
                match (actual.parse::<i64>(), bound.parse::<i64>()) {
                    (Ok(a), Ok(b)) if self.op == Operator::GreaterThan => a > b,
                    (Ok(a), Ok(b)) => a < b,
                    _ => false,
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        let first = self.values.first().map_or("", String::as_str);
        match self.op {
            Operator::Exists => write!(f, "{key}"),
            Operator::DoesNotExist => write!(f, "!{key}"),
            Operator::Equals => write!(f, "{key}={first}"),
            Operator::DoubleEquals => write!(f, "{key}=={first}"),
            Operator::NotEquals => write!(f, "{key}!={first}"),
            Operator::GreaterThan => write!(f, "{key}>{first}"),
            Operator::LessThan => write!(f, "{key}<{first}"),
            Operator::In => write!(f, "{key} in ({})", self.values.join(",")),
            Operator::NotIn => write!(f, "{key} notin ({})", self.values.join(",")),
        }
    }
}

/// A label selector: requirements that must all hold. Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// Sorted by key (stable), as Kubernetes does, so `Display` is canonical.
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Kubernetes string syntax: `a=b`, `a==b`, `a!=b`, `a in (x, y)`, `a notin (x)`, `a`
    /// (exists), `!a` (does not exist), `a>1`, `a<1`, comma-separated, whitespace tolerant.
    /// Empty string = everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        if s.len() > MAX_SELECTOR_LEN {
            return Err(SelectorError::TooLong(s.len()));
        }
        let mut parser = Parser {
            lexer: Lexer::new(s),
            peeked: None,
            input: s,
        };
        let mut requirements = Vec::new();
        if parser.peek() == &Token::End {
            return Ok(Self::default());
        }
        loop {
            if requirements.len() == MAX_REQUIREMENTS {
                return Err(SelectorError::TooManyRequirements);
            }
            requirements.push(parser.requirement()?);
            match parser.next() {
                Token::Comma => {}
                Token::End => break,
                Token::RParen => return Err(SelectorError::UnbalancedParens(s.into())),
                other => {
                    return Err(SelectorError::Unexpected {
                        found: other.to_string(),
                        expected: "',' or 'end of string'",
                    });
                }
            }
        }
        Ok(Self::from_requirements(requirements))
    }

    /// From a metav1 LabelSelector (`metav1.LabelSelectorAsSelector`): matchLabels become `=`
    /// requirements, matchExpressions In/NotIn/Exists/DoesNotExist.
    pub fn from_api(sel: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement::new(k, Operator::Equals, [v.clone()])?);
        }
        for expr in sel.match_expressions.iter().flatten() {
            let op = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::UnknownApiOperator {
                        key: expr.key.clone(),
                        op: other.into(),
                    });
                }
            };
            let values = expr.values.clone().unwrap_or_default();
            requirements.push(Requirement::new(&expr.key, op, values)?);
        }
        Ok(Self::from_requirements(requirements))
    }

    /// Equality requirements for every entry, like `labels.SelectorFromSet` (Service and
    /// ReplicationController selectors).
    pub fn from_map(labels: &BTreeMap<String, String>) -> Result<Self, SelectorError> {
        let requirements = labels
            .iter()
            .map(|(k, v)| Requirement::new(k, Operator::Equals, [v.clone()]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_requirements(requirements))
    }

    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self { requirements }
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    LParen,
    RParen,
    Comma,
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Token::Ident(s) => s.as_str(),
            Token::Not => "!",
            Token::Eq => "=",
            Token::DoubleEq => "==",
            Token::NotEq => "!=",
            Token::Gt => ">",
            Token::Lt => "<",
            Token::LParen => "(",
            Token::RParen => ")",
            Token::Comma => ",",
            Token::End => "end of string",
        };
        f.write_str(s)
    }
}

/// Characters that end an identifier (the Kubernetes lexer's "special symbols").
fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Self {
            chars: s.chars().peekable(),
        }
    }

    fn next_token(&mut self) -> Token {
        while self.chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(c) = self.chars.next() else {
            return Token::End;
        };
        match c {
            '!' if self.chars.next_if_eq(&'=').is_some() => Token::NotEq,
            '!' => Token::Not,
            '=' if self.chars.next_if_eq(&'=').is_some() => Token::DoubleEq,
            '=' => Token::Eq,
            '>' => Token::Gt,
            '<' => Token::Lt,
            '(' => Token::LParen,
            ')' => Token::RParen,
            ',' => Token::Comma,
            _ => {
                let mut ident = String::from(c);
                while let Some(c) = self
                    .chars
                    .next_if(|c| !c.is_whitespace() && !is_special(*c))
                {
                    ident.push(c);
                }
                Token::Ident(ident)
            }
        }
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token>,
    input: &'a str,
}

impl Parser<'_> {
    fn peek(&mut self) -> &Token {
        let lexer = &mut self.lexer;
        self.peeked.get_or_insert_with(|| lexer.next_token())
    }

    fn next(&mut self) -> Token {
        self.peeked
            .take()
            .unwrap_or_else(|| self.lexer.next_token())
    }

    fn unbalanced(&self) -> SelectorError {
        SelectorError::UnbalancedParens(self.input.into())
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut negated = false;
        let mut tok = self.next();
        if tok == Token::Not {
            negated = true;
            tok = self.next();
        }
        let key = match tok {
            Token::Ident(key) => key,
            Token::RParen => return Err(self.unbalanced()),
            other => {
                return Err(SelectorError::Unexpected {
                    found: other.to_string(),
                    expected: "a label key",
                });
            }
        };
        if matches!(self.peek(), Token::Comma | Token::End) {
            let op = if negated {
                Operator::DoesNotExist
            } else {
                Operator::Exists
            };
            return Requirement::new(&key, op, []);
        }
        if negated {
            return Err(SelectorError::Unexpected {
                found: self.next().to_string(),
                expected: "',' or 'end of string' after '!key'",
            });
        }
        let op = match self.next() {
            Token::Eq => Operator::Equals,
            Token::DoubleEq => Operator::DoubleEquals,
            Token::NotEq => Operator::NotEquals,
            Token::Gt => Operator::GreaterThan,
            Token::Lt => Operator::LessThan,
            Token::Ident(word) if word == "in" => Operator::In,
            Token::Ident(word) if word == "notin" => Operator::NotIn,
            Token::RParen => return Err(self.unbalanced()),
            other => {
                return Err(SelectorError::UnknownOperator {
                    key,
                    op: other.to_string(),
                });
            }
        };
        let values = match op {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        Requirement::new(&key, op, values)
    }

    /// The value after `=`, `!=`, `>`...; nothing before `,` or the end means the empty value.
    fn exact_value(&mut self) -> Result<String, SelectorError> {
        if matches!(self.peek(), Token::Comma | Token::End) {
            return Ok(String::new());
        }
        match self.next() {
            Token::Ident(v) => Ok(v),
            Token::RParen => Err(self.unbalanced()),
            other => Err(SelectorError::Unexpected {
                found: other.to_string(),
                expected: "a value",
            }),
        }
    }

    /// `( v1, v2, ... )`. Commas inside belong to the set; an empty element (`(a,)`) is the
    /// empty value, as in Kubernetes.
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Token::LParen => {}
            other => {
                return Err(SelectorError::Unexpected {
                    found: other.to_string(),
                    expected: "'('",
                });
            }
        }
        let mut values = Vec::new();
        if self.peek() == &Token::RParen {
            self.next();
            return Ok(values);
        }
        loop {
            match self.peek() {
                Token::Comma | Token::RParen => values.push(String::new()),
                Token::End => return Err(self.unbalanced()),
                Token::Ident(_) => {
                    if let Token::Ident(v) = self.next() {
                        values.push(v);
                    }
                }
                _ => {
                    return Err(SelectorError::Unexpected {
                        found: self.next().to_string(),
                        expected: "a value",
                    });
                }
            }
            match self.next() {
                Token::Comma => {}
                Token::RParen => return Ok(values),
                Token::End => return Err(self.unbalanced()),
                other => {
                    return Err(SelectorError::Unexpected {
                        found: other.to_string(),
                        expected: "',' or ')'",
                    });
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldOp {
    Equals,
    DoubleEquals,
    NotEquals,
}

impl FieldOp {
    fn as_str(self) -> &'static str {
        match self {
            FieldOp::Equals => "=",
            FieldOp::DoubleEquals => "==",
            FieldOp::NotEquals => "!=",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    op: FieldOp,
    value: String,
}

/// A field selector: `f=v`, `f==v`, `f!=v` terms that must all hold. Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// `allowed` = the field names the resource supports; others are rejected like Kubernetes'
    /// `field label not supported: x`. Values may escape `\,`, `\=` and `\\`.
    pub fn parse(s: &str, allowed: &[&str]) -> Result<Self, SelectorError> {
        if s.len() > MAX_SELECTOR_LEN {
            return Err(SelectorError::TooLong(s.len()));
        }
        let mut terms = Vec::new();
        for part in split_unescaped_commas(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            if terms.len() == MAX_REQUIREMENTS {
                return Err(SelectorError::TooManyRequirements);
            }
            let (field, op, raw_value) = split_field_term(part)
                .ok_or_else(|| SelectorError::InvalidFieldTerm(part.into()))?;
            let field = field.trim();
            if !allowed.contains(&field) {
                return Err(SelectorError::UnsupportedField(field.into()));
            }
            let value = unescape_field_value(raw_value.trim())?;
            terms.push(FieldTerm {
                field: field.into(),
                op,
                value,
            });
        }
        // Kubernetes sorts the terms, which makes the string form canonical.
        terms.sort_by(|a, b| {
            (&a.field, a.op.as_str(), &a.value).cmp(&(&b.field, b.op.as_str(), &b.value))
        });
        Ok(Self { terms })
    }

    /// `value_of(field)` returns the object's value for a field ("" when absent).
    pub fn matches(&self, value_of: impl Fn(&str) -> String) -> bool {
        self.terms.iter().all(|t| {
            let actual = value_of(&t.field);
            match t.op {
                FieldOp::Equals | FieldOp::DoubleEquals => actual == t.value,
                FieldOp::NotEquals => actual != t.value,
            }
        })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// If the selector pins `field` with `=`/`==`, that value.
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && t.op != FieldOp::NotEquals)
            .map(|t| t.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(
                f,
                "{}{}{}",
                t.field,
                t.op.as_str(),
                escape_field_value(&t.value)
            )?;
        }
        Ok(())
    }
}

fn split_unescaped_commas(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Splits at the first operator, trying `!=`, `==`, `=` at each position (as Kubernetes does).
fn split_field_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    const OPS: [(&str, FieldOp); 3] = [
        ("!=", FieldOp::NotEquals),
        ("==", FieldOp::DoubleEquals),
        ("=", FieldOp::Equals),
    ];
    term.char_indices().find_map(|(i, _)| {
        let rest = &term[i..];
        OPS.iter()
            .find(|(op, _)| rest.starts_with(op))
            .map(|(op, kind)| (&term[..i], *kind, &rest[op.len()..]))
    })
}

fn unescape_field_value(raw: &str) -> Result<String, SelectorError> {
    let err = |reason| SelectorError::InvalidFieldValue {
        value: raw.into(),
        reason,
    };
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                _ => {
                    return Err(err(
                        "invalid escape sequence (only \\\\, \\, and \\= are allowed)",
                    ));
                }
            },
            ',' | '=' => return Err(err("unescaped ',' or '=' (escape them with '\\')")),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn escape_field_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use metav1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn empty_selects_everything() {
        for s in ["", "   "] {
            let l = sel(s);
            assert!(l.is_empty());
            assert!(l.matches(&labels(&[])));
            assert!(l.matches(&labels(&[("a", "b")])));
            assert_eq!(l.to_string(), "");
        }
    }

    #[test]
    fn equality_operators() {
        let web = labels(&[("app", "web"), ("tier", "fe")]);
        assert!(sel("app=web").matches(&web));
        assert!(sel("app==web").matches(&web));
        assert!(!sel("app=db").matches(&web));
        assert!(sel("app!=db").matches(&web));
        assert!(!sel("app!=web").matches(&web));
        // A missing label satisfies `!=`.
        assert!(sel("zone!=x").matches(&web));
        assert!(sel("app=web,tier=fe").matches(&web));
        assert!(!sel("app=web,tier=be").matches(&web));
        // `a=` means "a is the empty string".
        assert!(sel("a=").matches(&labels(&[("a", "")])));
        assert!(!sel("a=").matches(&labels(&[])));
    }

    #[test]
    fn set_operators() {
        let s = sel("env in (prod, staging)");
        assert!(s.matches(&labels(&[("env", "prod")])));
        assert!(s.matches(&labels(&[("env", "staging")])));
        assert!(!s.matches(&labels(&[("env", "dev")])));
        assert!(!s.matches(&labels(&[])));
        let s = sel("env notin (prod)");
        assert!(s.matches(&labels(&[("env", "dev")])));
        assert!(s.matches(&labels(&[])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
        // Commas inside the parentheses belong to the set, not to the selector.
        let s = sel("a in (x,y),b");
        assert_eq!(s.requirements().len(), 2);
        assert_eq!(s.requirements()[0].values(), ["x", "y"]);
        // A trailing comma inside the set adds the empty value.
        assert_eq!(sel("a in (x,)").requirements()[0].values(), ["", "x"]);
    }

    #[test]
    fn existence_operators() {
        assert!(sel("app").matches(&labels(&[("app", "")])));
        assert!(!sel("app").matches(&labels(&[])));
        assert!(sel("!app").matches(&labels(&[])));
        assert!(!sel("!app").matches(&labels(&[("app", "x")])));
        assert!(sel(" ! app , b ").matches(&labels(&[("b", "1")])));
    }

    #[test]
    fn numeric_operators() {
        assert!(sel("gen>3").matches(&labels(&[("gen", "4")])));
        assert!(!sel("gen>3").matches(&labels(&[("gen", "3")])));
        assert!(!sel("gen>3").matches(&labels(&[("gen", "x")])));
        assert!(!sel("gen>3").matches(&labels(&[])));
        assert!(sel("gen<3").matches(&labels(&[("gen", "2")])));
        assert!(matches!(
            LabelSelector::parse("gen>x"),
            Err(SelectorError::NotAnInteger { .. })
        ));
    }

    #[test]
    fn whitespace_and_prefixed_keys() {
        let s = sel("  app.kubernetes.io/name = web ,  tier   in(a ,b)  ");
        assert!(s.matches(&labels(&[("app.kubernetes.io/name", "web"), ("tier", "b")])));
        assert_eq!(s.to_string(), "app.kubernetes.io/name=web,tier in (a,b)");
    }

    #[test]
    fn canonical_display() {
        assert_eq!(
            sel("tier in (b, a, a),app=web").to_string(),
            "app=web,tier in (a,b)"
        );
        assert_eq!(
            sel("z,!y,x!=1,w notin (q),v==2").to_string(),
            "v==2,w notin (q),x!=1,!y,z"
        );
        assert_eq!(sel("g>1,h<2").to_string(), "g>1,h<2");
        // Round trip.
        let s = sel("app=web,tier in (a,b),!legacy");
        assert_eq!(sel(&s.to_string()), s);
        assert_eq!(
            "app=web".parse::<LabelSelector>().map(|s| s.to_string()),
            Ok("app=web".into())
        );
    }

    #[test]
    fn errors_name_the_offending_part() {
        let err = |s: &str| LabelSelector::parse(s).expect_err(s);
        match err("-bad=x") {
            SelectorError::InvalidKey { key, .. } => assert_eq!(key, "-bad"),
            e => panic!("{e:?}"),
        }
        match err("a=bad value") {
            SelectorError::Unexpected { found, .. } => assert_eq!(found, "value"),
            e => panic!("{e:?}"),
        }
        match err("a=-x") {
            SelectorError::InvalidValue { key, value, .. } => {
                assert_eq!((key.as_str(), value.as_str()), ("a", "-x"));
            }
            e => panic!("{e:?}"),
        }
        match err("a in (x, -y)") {
            SelectorError::InvalidValue { value, .. } => assert_eq!(value, "-y"),
            e => panic!("{e:?}"),
        }
        assert!(matches!(
            err("a in (x, y"),
            SelectorError::UnbalancedParens(_)
        ));
        assert!(matches!(
            err("a in x, y)"),
            SelectorError::Unexpected { .. }
        ));
        assert!(matches!(err("a=b)"), SelectorError::UnbalancedParens(_)));
        assert!(matches!(err("a)"), SelectorError::UnbalancedParens(_)));
        assert!(matches!(err("a in ()"), SelectorError::EmptySet { .. }));
        match err("a ~ b") {
            SelectorError::UnknownOperator { key, op } => {
                assert_eq!((key, op), ("a".into(), "~".into()));
            }
            e => panic!("{e:?}"),
        }
        assert!(matches!(err("a b"), SelectorError::UnknownOperator { .. }));
        assert!(matches!(err("!a=b"), SelectorError::Unexpected { .. }));
        assert!(matches!(err("a=b,"), SelectorError::Unexpected { .. }));
        assert!(matches!(err(",a"), SelectorError::Unexpected { .. }));
        assert!(matches!(err("a==="), SelectorError::Unexpected { .. }));
        // Messages mention the culprit.
        assert!(err("x/y/z=1").to_string().contains("x/y/z"));
    }

    fn api(
        match_labels: &[(&str, &str)],
        exprs: &[(&str, &str, Option<&[&str]>)],
    ) -> metav1::LabelSelector {
        metav1::LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
            match_expressions: (!exprs.is_empty()).then(|| {
                exprs
                    .iter()
                    .map(|(k, op, vals)| LabelSelectorRequirement {
                        key: k.to_string(),
                        operator: op.to_string(),
                        values: vals
                            .map(|v| v.iter().map(std::string::ToString::to_string).collect()),
                    })
                    .collect()
            }),
        }
    }

    #[test]
    fn from_api_selector() {
        let s = LabelSelector::from_api(&api(
            &[("app", "web")],
            &[
                ("tier", "In", Some(&["b", "a"])),
                ("env", "NotIn", Some(&["dev"])),
                ("track", "Exists", None),
                ("legacy", "DoesNotExist", Some(&[])),
            ],
        ))
        .expect("valid");
        assert_eq!(
            s.to_string(),
            "app=web,env notin (dev),!legacy,tier in (a,b),track"
        );
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a"), ("track", "x")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(
            LabelSelector::from_api(&metav1::LabelSelector::default())
                .expect("ok")
                .is_empty()
        );
    }

    #[test]
    fn from_api_validation() {
        let bad = |l: &[(&str, &str)], e: &[(&str, &str, Option<&[&str]>)]| {
            LabelSelector::from_api(&api(l, e)).expect_err("invalid")
        };
        assert!(matches!(
            bad(&[], &[("a", "In", None)]),
            SelectorError::EmptySet { .. }
        ));
        assert!(matches!(
            bad(&[], &[("a", "NotIn", Some(&[]))]),
            SelectorError::EmptySet { .. }
        ));
        assert!(matches!(
            bad(&[], &[("a", "Exists", Some(&["x"]))]),
            SelectorError::ValuesNotAllowed { .. }
        ));
        assert!(matches!(
            bad(&[], &[("a", "DoesNotExist", Some(&["x"]))]),
            SelectorError::ValuesNotAllowed { .. }
        ));
        assert!(matches!(
            bad(&[], &[("a", "Gt", Some(&["1"]))]),
            SelectorError::UnknownApiOperator { .. }
        ));
        assert!(matches!(
            bad(&[("bad key", "x")], &[]),
            SelectorError::InvalidKey { .. }
        ));
        assert!(matches!(
            bad(&[("k", "bad value")], &[]),
            SelectorError::InvalidValue { .. }
        ));
    }

    #[test]
    fn from_map_selector() {
        let s = LabelSelector::from_map(&labels(&[("b", "2"), ("a", "1")])).expect("valid");
        assert_eq!(s.to_string(), "a=1,b=2");
        assert!(s.matches(&labels(&[("a", "1"), ("b", "2"), ("c", "3")])));
        assert!(LabelSelector::from_map(&labels(&[("a", "x y")])).is_err());
    }

    const POD_FIELDS: &[&str] = &[
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "status.phase",
    ];

    fn pod_field(field: &str) -> String {
        match field {
            "metadata.name" => "web-1".into(),
            "spec.nodeName" => "node-a".into(),
            "status.phase" => "Running".into(),
            _ => String::new(),
        }
    }

    #[test]
    fn field_selector_matching() {
        let f = |s: &str| FieldSelector::parse(s, POD_FIELDS).unwrap_or_else(|e| panic!("{e}"));
        assert!(f("").is_empty());
        assert!(f("").matches(pod_field));
        assert!(f("spec.nodeName=node-a").matches(pod_field));
        assert!(f("spec.nodeName==node-a").matches(pod_field));
        assert!(!f("spec.nodeName=node-b").matches(pod_field));
        assert!(f("status.phase!=Pending, metadata.name = web-1").matches(pod_field));
        assert!(!f("status.phase!=Running").matches(pod_field));
        // Absent fields compare as "".
        assert!(f("metadata.namespace=").matches(pod_field));
        assert!(!f("metadata.namespace=default").matches(pod_field));
    }

    #[test]
    fn field_selector_exact_and_display() {
        let s = FieldSelector::parse("status.phase!=Failed,metadata.name==web-1", POD_FIELDS)
            .expect("valid");
        assert_eq!(s.exact("metadata.name"), Some("web-1"));
        assert_eq!(s.exact("status.phase"), None);
        assert_eq!(s.exact("spec.nodeName"), None);
        assert_eq!(s.to_string(), "metadata.name==web-1,status.phase!=Failed");
        let escaped = FieldSelector::parse(r"metadata.name=a\,b\=c\\d", POD_FIELDS).expect("valid");
        assert_eq!(escaped.exact("metadata.name"), Some(r"a,b=c\d"));
        assert_eq!(escaped.to_string(), r"metadata.name=a\,b\=c\\d");
    }

    #[test]
    fn field_selector_errors() {
        let err = |s: &str| FieldSelector::parse(s, POD_FIELDS).expect_err(s);
        assert_eq!(
            err("spec.foo=x").to_string(),
            "field label not supported: spec.foo"
        );
        assert!(matches!(
            err("metadata.name"),
            SelectorError::InvalidFieldTerm(_)
        ));
        assert!(matches!(
            err("metadata.name=a=b"),
            SelectorError::InvalidFieldValue { .. }
        ));
        assert!(matches!(
            err(r"metadata.name=a\x"),
            SelectorError::InvalidFieldValue { .. }
        ));
        assert!(matches!(
            err(r"metadata.name=a\"),
            SelectorError::InvalidFieldValue { .. }
        ));
        assert!(matches!(err("=x"), SelectorError::UnsupportedField(_)));
    }

    #[test]
    fn selectors_are_bounded() {
        let labels = |n: usize| (0..n).map(|i| format!("k{i}!=v")).collect::<Vec<_>>();
        let fields = |n: usize| (0..n).map(|i| format!("a!=x{i}")).collect::<Vec<_>>();
        assert_eq!(
            LabelSelector::parse(&labels(100).join(","))
                .unwrap()
                .requirements()
                .len(),
            100
        );
        assert_eq!(
            LabelSelector::parse(&labels(101).join(",")),
            Err(SelectorError::TooManyRequirements)
        );
        assert!(FieldSelector::parse(&fields(100).join(","), &["a"]).is_ok());
        assert_eq!(
            FieldSelector::parse(&fields(101).join(","), &["a"]),
            Err(SelectorError::TooManyRequirements)
        );
        // Length is checked before anything is parsed.
        let long = format!("a in ({})", vec!["v"; 40_000].join(","));
        assert_eq!(
            LabelSelector::parse(&long),
            Err(SelectorError::TooLong(long.len()))
        );
        let long = format!("a={}", "\\,".repeat(40_000));
        assert_eq!(
            FieldSelector::parse(&long, &["a"]),
            Err(SelectorError::TooLong(long.len()))
        );
        // A large set is matched by lookup.
        let set: Vec<String> = (0..5_000).map(|i| format!("v{i}")).collect();
        let sel = LabelSelector::parse(&format!("a in ({})", set.join(","))).unwrap();
        let labels = |v: &str| BTreeMap::from([("a".to_string(), v.to_string())]);
        assert!(sel.matches(&labels("v4999")));
        assert!(!sel.matches(&labels("w")));
    }
}
