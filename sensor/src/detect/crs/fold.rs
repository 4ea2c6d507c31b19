//! Partial evaluation at load time: the rules whose verdict is the same on every request are
//! evaluated once, and the engine replays what they did instead of evaluating them per request.
//!
//! Most of what CRS runs per request is scaffolding of that kind: the 901 rules that set TX
//! defaults when `crs-setup.conf` did not (`SecRule &TX:x "@eq 0" ... setvar:tx.x=...`), the
//! paranoia-level gates (`SecRule TX:EXECUTING_PARANOIA_LEVEL "@lt 2" ... skipAfter:...`), the
//! application exclusion gates (`SecRule &TX:crs_exclusions_drupal|... "@eq 0" ...`).
//!
//! One forward pass over the phase lists in evaluation order (jumps only go forward) tracks an
//! abstract state: the TX values that are the same on every request reaching that point, and
//! the names a request can change (written by a rule whose verdict depends on the request, a
//! `capture`, a `setvar` whose name has a macro: every name with its literal prefix). Runs that
//! jumped to a marker are joined with the others there (a name on which they disagree becomes
//! unknown). A rule is folded when every link reads only known TX names (`TX:name`,
//! `&TX:name`, `+=`/`-=` of a known name), has a static operator, no `capture`, no `ctl`, no
//! `skip`, literal `setvar`s, and no `ctl:ruleRemove*` of a rule that may have run before it can
//! remove it or its targets; it is then evaluated with the engine's own code on that state and
//! its effect (MATCHED_VAR(S), `setvar`s, whether the chain matched and so jumps) recorded.
//! So is a rule whose first link reads only known TX names with a known operator and matches
//! none of them: it does nothing else on any request, whatever its actions and later links
//! (CRS's `TX:PARANOIA_LEVEL "@ge 2"` rules that add the PL2 score, at PL1).
//! A folded rule that matches and logs is left to run (its message may read request data).
//! An operator whose argument reads only TX names known where its rule runs (CRS's
//! `@within %{tx.allowed_methods}`) is compiled at load with the argument expanded, instead of
//! expanded on every request; a top rule's then gets a verdict (see `Rule::verdict`). So is a
//! `setvar` value made of such TX names and the rule's own `%{rule.*}` (the score increments
//! `+%{tx.critical_anomaly_score}`, `tx.msg=%{rule.msg}`), unless the rule itself writes a name
//! it reads.
//!
//! [`runs`] then merges, from each folded rule, the effects of every folded rule a request
//! meets up to the next evaluated one (jumps taken): the evaluator applies them at once.

use std::collections::HashSet;
use std::sync::Arc;

use super::ast::IdRange;
use super::collections::{Collections, RequestInput};
use super::eval::{self, CollMap};
use super::macros::Template;
use super::operator::Operator;
use super::rules::{Coll, Compiled, Ctl, Folded, FoldedRun, Item, Op, Rule, Sel, SetOp, Var};

/// TX names whose value may depend on the request at some point.
#[derive(Clone, Default)]
struct Unknown {
    all: bool,
    /// `TX:0`, `TX:1`, ... (written by `capture`).
    digits: bool,
    names: HashSet<Arc<str>>,
    prefixes: Vec<Vec<u8>>,
}

impl Unknown {
    /// Adds what the link `l` may write to TX: the digits when it captures, the names of its
    /// `setvar`s (for a name with a macro, every name with its literal prefix).
    fn add_writes(&mut self, l: &Rule) {
        if l.capture {
            self.digits = true;
        }
        for sv in l.setvars.iter().filter(|sv| sv.coll == Coll::Tx) {
            match &sv.name_literal {
                Some(n) => {
                    self.names.insert(n.clone());
                }
                None => {
                    let prefix = sv.name.literal_prefix();
                    if prefix.is_empty() {
                        self.all = true;
                    } else {
                        self.prefixes.push(prefix.to_vec());
                    }
                }
            }
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.all
            || (self.digits && !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()))
            || self.names.contains(name)
            || self.prefixes.iter().any(|p| name.as_bytes().starts_with(p))
    }

    fn union(&mut self, o: &Unknown) {
        self.all |= o.all;
        self.digits |= o.digits;
        self.names.extend(o.names.iter().cloned());
        for p in &o.prefixes {
            if !self.prefixes.contains(p) {
                self.prefixes.push(p.clone());
            }
        }
    }
}

/// The TX collection on every request reaching a point: `tx` holds the values of the known
/// names (a known name not in it is unset).
#[derive(Clone, Default)]
struct Abs {
    tx: CollMap,
    unknown: Unknown,
}

impl Abs {
    fn known(&self, name: &str) -> bool {
        !self.unknown.contains(name)
    }

    fn forget(&mut self, name: Arc<str>) {
        self.tx.remove(&name);
        self.unknown.names.insert(name);
    }

    /// The state of runs that reach a point either way.
    fn join(&mut self, o: &Abs) {
        self.unknown.union(&o.unknown);
        let mut differ: Vec<Arc<str>> = Vec::new();
        for (k, v) in &self.tx {
            if o.tx.get(k) != Some(v) {
                differ.push(k.clone());
            }
        }
        for (k, v) in &o.tx {
            if self.tx.get(k) != Some(v) {
                differ.push(k.clone());
            }
        }
        for k in differ {
            self.forget(k);
        }
    }
}

/// `ctl:ruleRemove*` of rules that may have run.
#[derive(Default)]
struct Removals {
    ids: Vec<IdRange>,
    tags: Vec<String>,
    target_ids: Vec<u64>,
    target_tags: Vec<String>,
}

impl Removals {
    fn affect(&self, top: &Rule) -> bool {
        let tagged = |t: &String| top.tags.iter().any(|rt| rt == t);
        self.ids.iter().any(|r| r.contains(top.id))
            || self.tags.iter().any(tagged)
            || self.target_ids.contains(&top.id)
            || self.target_tags.iter().any(tagged)
    }

    fn add(&mut self, ctls: &[Ctl]) {
        for c in ctls {
            match c {
                Ctl::RuleRemoveById(ids) => self.ids.extend(ids.iter().copied()),
                Ctl::RuleRemoveByTag(t) => self.tags.push(t.clone()),
                Ctl::RuleRemoveTargetById(id, _) => self.target_ids.push(*id),
                Ctl::RuleRemoveTargetByTag(t, _) => self.target_tags.push(t.clone()),
                _ => {}
            }
        }
    }
}

fn links(top: &Rule) -> impl Iterator<Item = &Rule> {
    std::iter::successors(Some(top), |r| r.chain.as_deref())
}

/// Whether a template expands the same on every request: its macros are known TX names and
/// the rule's own `%{rule.*}`.
fn template_known(t: &Template, abs: &Abs) -> bool {
    t.macros().all(|(name, key)| match name {
        "RULE" => true,
        "TX" => key.is_none_or(|k| abs.known(k)),
        _ => false,
    })
}

/// Whether one link's verdict and effect depend only on known TX values.
fn link_static(r: &Rule, abs: &Abs) -> bool {
    if !r.ctls.is_empty() || r.capture || r.skip > 0 {
        return false;
    }
    if !condition_static(r, abs) {
        return false;
    }
    r.setvars.iter().all(|sv| {
        let value_known = template_known(&sv.value, abs);
        match (&sv.name_literal, sv.op) {
            (_, SetOp::Unset | SetOp::Set) => template_known(&sv.name, abs) && value_known,
            // reads the name's value: it must be known, so its name too
            (Some(name), SetOp::Add | SetOp::Sub) => {
                sv.coll == Coll::Tx && value_known && abs.known(name)
            }
            (None, _) => false,
        }
    })
}

/// Whether one link's verdict (not what it does when it matches) depends only on known TX
/// values.
fn condition_static(r: &Rule, abs: &Abs) -> bool {
    let op_known = match &r.op {
        None | Some(Op::Static(_)) => true,
        Some(Op::Dynamic { arg, .. }) => template_known(arg, abs),
        Some(Op::SqlI | Op::Xss) => false,
    };
    if !op_known {
        return false;
    }
    r.targets.iter().all(|t| {
        t.var == Var::Collection(Coll::Tx)
            && match &t.sel {
                Sel::Key(k) => abs.known(k),
                _ => false,
            }
    })
}

/// What a rule whose verdict depends on the request may do to the state.
fn taint(top: &Rule, abs: &mut Abs, removals: &mut Removals) {
    for r in links(top) {
        abs.unknown.add_writes(r);
        for sv in r.setvars.iter().filter(|sv| sv.coll == Coll::Tx) {
            if let Some(n) = &sv.name_literal {
                abs.tx.remove(n);
            }
        }
        removals.add(&r.ctls);
    }
}

/// Folds what can be folded; returns how many rules were.
pub fn fold(rules: &mut Compiled) -> usize {
    // `skip:N` jumps over a number of rules, not to a marker: not modelled (CRS has none)
    let any_skip = rules
        .phases
        .iter()
        .flatten()
        .any(|i| matches!(i, Item::Rule(r) if links(r).any(|l| l.skip > 0)));
    if any_skip {
        return 0;
    }
    let empty = Collections::from_head(&RequestInput {
        method: b"GET",
        target: b"/",
        protocol: b"HTTP/1.1",
        headers: &[],
        body: b"",
        remote_addr: "",
    });
    let mut found: Vec<(usize, usize, Folded)> = Vec::new();
    let mut unreached: Vec<(usize, usize)> = Vec::new();
    let mut removals = Removals::default();
    let mut constants: Vec<(usize, usize, usize, Operator)> = Vec::new();
    let mut values: Vec<ConstantValue> = Vec::new();
    let mut current: Option<Abs> = Some(Abs::default());
    for (phase, items) in rules.phases.iter().enumerate() {
        let mut pending: Vec<(&str, Abs)> = Vec::new();
        for (idx, item) in items.iter().enumerate() {
            let rule = match item {
                Item::Marker(name) => {
                    let (arrive, wait): (Vec<_>, Vec<_>) =
                        pending.into_iter().partition(|(m, _)| *m == name.as_str());
                    pending = wait;
                    for (_, abs) in arrive {
                        match current.as_mut() {
                            Some(cur) => cur.join(&abs),
                            None => current = Some(abs),
                        }
                    }
                    continue;
                }
                Item::Rule(r) => r,
            };
            // never reached (jumped over on every request)
            let Some(abs) = current.as_mut() else {
                unreached.push((phase, idx));
                continue;
            };
            constant_arguments(rule, abs, phase, idx, &mut constants);
            constant_values(rule, abs, phase, idx, &mut values);
            let removable = removals.affect(rule);
            let fixed = !removable && links(rule).all(|l| link_static(l, abs));
            // a rule whose first link matches no value on any request does nothing else, however
            // unknowable its actions and the links after it (PL2 score sums at PL1)
            let never = (!fixed && !removable && condition_static(rule, abs))
                .then(|| eval::trace_rule(rules, rule, &empty, abs.tx.clone()))
                .filter(|f| !f.matched && f.appended.is_empty() && f.writes.is_empty());
            if !fixed && never.is_none() {
                taint(rule, abs, &mut removals);
                for m in links(rule).filter_map(|l| l.skip_after.as_deref()) {
                    pending.push((m, abs.clone()));
                }
                continue;
            }
            // the trace of a rule that never matches is its effect already
            let f = match never {
                Some(f) => f,
                None => eval::trace_rule(rules, rule, &empty, abs.tx.clone()),
            };
            let matched = f.matched;
            for (coll, name, value) in &f.writes {
                if *coll != eval::coll_index(Coll::Tx) {
                    continue;
                }
                abs.unknown.names.remove(name);
                match value {
                    Some(v) => {
                        abs.tx.insert(name.clone(), v.clone());
                    }
                    None => {
                        abs.tx.remove(name);
                    }
                }
            }
            // the marker of the last `after_match`: the first link with one
            let jump = matched
                .then(|| links(rule).find_map(|l| l.skip_after.as_deref()))
                .flatten();
            if let Some(m) = jump
                && let Some(abs) = current.take()
            {
                pending.push((m, abs));
            }
            if !(matched && rule.log) {
                found.push((phase, idx, f));
            }
        }
        // a marker that never came: those runs skip the rest of the phase
        for (_, abs) in pending {
            match current.as_mut() {
                Some(cur) => cur.join(&abs),
                None => current = Some(abs),
            }
        }
    }
    for (phase, idx) in unreached {
        if let Some(Item::Rule(r)) = rules.phases[phase].get_mut(idx) {
            r.unreached = true;
        }
    }
    let n = found.len();
    for (phase, idx, f) in found {
        if let Some(Item::Rule(r)) = rules.phases[phase].get_mut(idx) {
            r.folded = Some(Box::new(f));
        }
    }
    for v in values {
        if let Some(sv) = link_mut(&mut rules.phases, v.phase, v.idx, v.depth)
            .and_then(|l| l.setvars.get_mut(v.setvar))
        {
            sv.value_literal = Some(v.value);
        }
    }
    for (phase, idx, depth, op) in constants {
        let Some(l) = link_mut(&mut rules.phases, phase, idx, depth) else {
            continue;
        };
        l.op = Some(Op::Static(op));
        // a top rule's operator now depends on the value alone: a verdict can stand for it
        if depth == 0 && eval::wants_verdict(l) {
            l.verdict = Some(u32::MAX);
            l.checks = eval::prefilter_checks(l, &mut rules.keys);
        }
    }
    n
}

/// The operators of `top`'s links whose argument has only TX macros that are known where the
/// rule runs (the same on every request reaching it: `crs-setup.conf`'s lists such as
/// `tx.allowed_methods`), compiled now with the argument expanded as the engine would expand
/// it, instead of on every request. A chained link's argument must not read what an earlier
/// link of the rule may write (a `setvar`, a capture).
fn constant_arguments(
    top: &Rule,
    abs: &Abs,
    phase: usize,
    idx: usize,
    out: &mut Vec<(usize, usize, usize, Operator)>,
) {
    let mut written = Unknown::default();
    for (depth, l) in links(top).enumerate() {
        if let Some(Op::Dynamic { name, arg, .. }) = &l.op
            && constant_template(arg, abs, &written)
        {
            // as the engine expands an operator's argument: `%{rule.*}` to nothing
            let expanded = expand_constant(arg, abs, None);
            if let Some(op) = eval::compile_expanded(l, name, &expanded) {
                out.push((phase, idx, depth, op));
            }
        }
        // what this link writes, for the links after it
        written.add_writes(l);
    }
}

/// Whether `t` expands the same on every request reaching the rule at `abs`: its macros are
/// the rule's own `%{rule.*}` and TX names known there that the rule does not write itself
/// (`written`).
fn constant_template(t: &Template, abs: &Abs, written: &Unknown) -> bool {
    t.macros().all(|(n, k)| match n {
        "RULE" => true,
        "TX" => k.is_some_and(|k| abs.known(k) && !written.contains(k)),
        _ => false,
    })
}

/// A [`constant_template`] expanded as the engine expands it: TX names from `abs`, and
/// `%{rule.*}` from `rule` (to nothing without one, as for an operator's argument).
fn expand_constant(t: &Template, abs: &Abs, rule: Option<&Rule>) -> Vec<u8> {
    t.expand_with(|n, k, buf| match (n, rule) {
        ("RULE", Some(r)) => eval::rule_macro(r, k, buf),
        ("TX", _) => {
            if let Some(v) = k.and_then(|k| abs.tx.get(k)) {
                buf.extend_from_slice(v);
            }
        }
        _ => {}
    })
}

/// Link `depth` of the top rule at `idx` of `phases[phase]` (0: the top rule).
fn link_mut(phases: &mut [Vec<Item>], phase: usize, idx: usize, depth: usize) -> Option<&mut Rule> {
    let Some(Item::Rule(top)) = phases.get_mut(phase)?.get_mut(idx) else {
        return None;
    };
    let mut link = Some(&mut **top);
    for _ in 0..depth {
        link = link.and_then(|l| l.chain.as_deref_mut());
    }
    link
}

/// A `setvar` value that expands the same on every request reaching its rule.
struct ConstantValue {
    phase: usize,
    idx: usize,
    /// The link (0: the top rule).
    depth: usize,
    /// The `setvar` among the link's.
    setvar: usize,
    value: Arc<[u8]>,
}

/// The `setvar` values of `top`'s links whose macros are the rule's own (`%{rule.msg}`) and TX
/// names known where the rule runs (`+%{tx.critical_anomaly_score}`), expanded now as the
/// engine would expand them, instead of on every match. A value must not read a name the
/// rule itself may write (a `setvar` of any of its links runs again for each value matched,
/// and a `capture` writes the digits).
fn constant_values(top: &Rule, abs: &Abs, phase: usize, idx: usize, out: &mut Vec<ConstantValue>) {
    let mut written = Unknown::default();
    for l in links(top) {
        written.add_writes(l);
    }
    for (depth, l) in links(top).enumerate() {
        for (setvar, sv) in l.setvars.iter().enumerate() {
            let constant = sv.value_literal.is_none()
                && sv.op != SetOp::Unset
                && constant_template(&sv.value, abs, &written);
            if !constant {
                continue;
            }
            // as the engine expands a `setvar`: `%{rule.*}` of the top rule
            let value = expand_constant(&sv.value, abs, Some(top));
            out.push(ConstantValue {
                phase,
                idx,
                depth,
                setvar,
                value: Arc::from(value),
            });
        }
    }
}

/// Works out [`Compiled::folded_runs`] once rules are folded: from each folded rule, what the
/// folded rules a request meets from there do, taken together, and where evaluation goes on.
/// A folded rule is never removed at run time (`ctl:ruleRemove*` cannot reach it) and has no
/// `ctl` or `skip`, so from a folded rule reached with no jump pending, every step up to the
/// next evaluated rule is the same on every request.
pub fn runs(rules: &mut Compiled) {
    for (phase, items) in rules.phases.iter().enumerate() {
        let runs = (0..items.len()).map(|i| run_from(items, i)).collect();
        rules.folded_runs[phase] = runs;
    }
}

fn run_from(items: &[Item], start: usize) -> Option<Box<FoldedRun>> {
    if !matches!(items.get(start), Some(Item::Rule(r)) if r.folded.is_some()) {
        return None;
    }
    let mut effect = Folded::default();
    let mut marker: Option<&str> = None;
    let mut next = start;
    while let Some(item) = items.get(next) {
        match item {
            Item::Marker(name) => {
                if marker == Some(name.as_str()) {
                    marker = None;
                }
            }
            Item::Rule(_) if marker.is_some() => {}
            Item::Rule(r) => {
                let Some(f) = &r.folded else {
                    break;
                };
                if f.cleared {
                    effect.cleared = true;
                    effect.appended.clear();
                }
                effect.appended.extend(f.appended.iter().cloned());
                effect.writes.extend(f.writes.iter().cloned());
                if f.matched {
                    // as `after_chain` leaves it: the first link's jump wins
                    marker = links(r).find_map(|l| l.skip_after.as_deref());
                }
            }
        }
        next += 1;
    }
    // only the last write of a name counts (a collection is a map)
    let mut seen = HashSet::new();
    let mut writes: Vec<_> = effect
        .writes
        .drain(..)
        .rev()
        .filter(|(idx, name, _)| seen.insert((*idx, name.clone())))
        .collect();
    writes.reverse();
    effect.writes = writes;
    let tx_index = eval::coll_index(Coll::Tx);
    let tx = (!effect.writes.is_empty()
        && effect
            .writes
            .iter()
            .all(|(idx, _, v)| *idx == tx_index && v.is_some()))
    .then(|| {
        let mut map = CollMap::default();
        for (_, name, value) in &effect.writes {
            if let Some(v) = value {
                map.insert(name.clone(), v.clone());
            }
        }
        Arc::new(map)
    });
    Some(Box::new(FoldedRun { effect, next, tx }))
}
