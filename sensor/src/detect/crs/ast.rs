//! The SecLang configuration as written: what `parse` produces and `engine` compiles.
//!
//! The tree stays close to the text (names as written, action values unquoted but not yet
//! interpreted) so that every later error can point at the file and line it came from.

use std::path::PathBuf;
use std::sync::Arc;

/// Where a directive starts: the file and its 1-based line (continuation lines count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<PathBuf>,
    pub line: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One directive with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub loc: Location,
    pub item: T,
}

/// The directives, in file order (Include already expanded in place).
#[derive(Debug, Clone, PartialEq)]
pub enum Directive {
    /// `SecRule VARIABLES "OPERATOR" "ACTIONS"`. A rule with a `chain` action is followed by
    /// its chained rule as the next `Rule` directive; the parser does not nest them.
    Rule(RuleDecl),
    /// `SecAction "ACTIONS"`: a rule with no variables whose operator always matches.
    Action(Vec<Action>),
    /// `SecMarker NAME` (the name unquoted).
    Marker(String),
    /// `SecDefaultAction "ACTIONS"`.
    DefaultAction(Vec<Action>),
    /// `SecRuleRemoveById 1 2 100-200`.
    RemoveById(Vec<IdRange>),
    /// `SecRuleRemoveByTag TAG` (the argument as written, unquoted).
    RemoveByTag(String),
    /// `SecRuleRemoveByMsg MSG`.
    RemoveByMsg(String),
    /// `SecRuleUpdateTargetById 942100 "!ARGS:foo|ARGS:bar"` (ids may be ranges).
    UpdateTargetById {
        ids: Vec<IdRange>,
        targets: Vec<VarSpec>,
    },
    /// `SecRuleUpdateTargetByTag TAG "!ARGS:foo"`.
    UpdateTargetByTag { tag: String, targets: Vec<VarSpec> },
    /// `SecRuleUpdateTargetByMsg MSG "!ARGS:foo"`.
    UpdateTargetByMsg { msg: String, targets: Vec<VarSpec> },
    /// `SecRuleUpdateActionById 942100 "ACTIONS"`.
    UpdateActionById { id: u64, actions: Vec<Action> },
    /// Any other `Sec*` directive that only configures the engine (SecRuleEngine,
    /// SecRequestBodyAccess, SecComponentSignature, SecCollectionTimeout, SecArgumentSeparator,
    /// ...): name as written, arguments unquoted.
    Config { name: String, args: Vec<String> },
}

/// An inclusive range of rule ids (`100-200`, or a single id as `n-n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub first: u64,
    pub last: u64,
}

impl IdRange {
    pub fn contains(&self, id: u64) -> bool {
        self.first <= id && id <= self.last
    }
}

/// `SecRule` without its location.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleDecl {
    pub variables: Vec<VarSpec>,
    pub operator: OperatorSpec,
    pub actions: Vec<Action>,
}

/// One target of a rule: `ARGS`, `!ARGS:foo`, `&TX:bar`, `REQUEST_HEADERS:/^x-/`, `XML:/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarSpec {
    /// `!`: remove these from the rule's targets.
    pub exclude: bool,
    /// `&`: the number of matching entries instead of their values.
    pub count: bool,
    /// Collection or variable name, uppercased (`ARGS`, `REQUEST_HEADERS`, `TX`, `XML`).
    pub collection: String,
    pub selector: Option<Selector>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `ARGS:foo` (as written; keys compare case-insensitively). `XML:/*` is `Key("/*")`.
    Key(String),
    /// `ARGS:/^foo/` (the pattern between the slashes, unescaped `\/` -> `/`).
    Regex(String),
}

/// `"@rx foo"`, `"!@within %{tx.allowed_methods}"`, or a bare `"foo"` (which is `@rx foo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSpec {
    pub negated: bool,
    /// Operator name without `@`, as written (`rx`, `pmFromFile`, `detectSQLi`).
    pub name: String,
    /// Everything after the name and the single space that follows it; may contain macros.
    pub argument: String,
}

/// One action: `id:942100`, `t:none`, `msg:'SQL Injection'`, `chain`, `setvar:'tx.x=+%{...}'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// Name as written (`t`, `setvar`, `skipAfter`, `ctl`, `pass`).
    pub name: String,
    /// The value after the first `:`, with one level of single quotes removed.
    pub value: Option<String>,
}
