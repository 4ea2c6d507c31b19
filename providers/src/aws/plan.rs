//! Planning a write round: apply queued diffs, in order, to what the sets hold now. Pure.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::{Diff, Error, Family, parse_cidr};

use super::NAME;

/// What one IP set holds, as read from AWS (or as we last wrote it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetState {
    /// Parsed entries, each with its text exactly as AWS returned it (written back verbatim).
    pub(crate) addresses: BTreeMap<IpNet, String>,
    /// Entries we cannot parse: never touched, written back verbatim, counted against capacity.
    pub(crate) unparsed: Vec<String>,
    /// Token for the next UpdateIPSet.
    pub(crate) lock_token: String,
    /// The set's description, preserved on every update.
    pub(crate) description: Option<String>,
}

impl SetState {
    pub(crate) fn from_aws(
        addresses: &[String],
        lock_token: String,
        description: Option<String>,
    ) -> SetState {
        let mut parsed = BTreeMap::new();
        let mut unparsed = Vec::new();
        for a in addresses {
            match parse_cidr(a) {
                Ok(net) if !parsed.contains_key(&net) => {
                    parsed.insert(net, a.clone());
                }
                _ => unparsed.push(a.clone()),
            }
        }
        SetState {
            addresses: parsed,
            unparsed,
            lock_token,
            description,
        }
    }

    /// Entries in the set, ours and anyone else's.
    pub(crate) fn len(&self) -> usize {
        self.addresses.len() + self.unparsed.len()
    }

    /// The full address list for UpdateIPSet.
    pub(crate) fn to_list(&self) -> Vec<String> {
        self.unparsed
            .iter()
            .cloned()
            .chain(self.addresses.values().cloned())
            .collect()
    }
}

/// One set as the planner sees it.
#[derive(Debug)]
pub(crate) struct PlanSet {
    pub(crate) family: Family,
    pub(crate) capacity: usize,
    pub(crate) state: SetState,
}

/// Result of [`plan`].
#[derive(Debug)]
pub(crate) struct Plan {
    /// Per input diff: accepted, or why not (only [`Error::LimitExceeded`]).
    pub(crate) outcomes: Vec<Result<(), Error>>,
    /// Per set: the new state if it changed (lock token still the old one).
    pub(crate) changed: Vec<Option<SetState>>,
    /// Per set: entries added and removed, for logs.
    pub(crate) counts: Vec<(usize, usize)>,
}

/// Apply `diffs` in order to `sets`. A diff whose adds do not fit into the free room of their
/// family (after its own removes) is refused whole with [`Error::LimitExceeded`] and changes
/// nothing; the others are applied. Adds already present anywhere are no-ops; new entries go
/// into the first set of their family with room (sets fill in configuration order). Removes
/// take an entry out of whichever set holds it. Entries nobody asked to remove are never
/// touched.
pub(crate) fn plan(sets: &[PlanSet], diffs: &[&Diff]) -> Plan {
    let mut work: Vec<SetState> = sets.iter().map(|s| s.state.clone()).collect();
    let mut counts = vec![(0usize, 0usize); sets.len()];
    let mut dirty = vec![false; sets.len()];
    let mut outcomes = Vec::with_capacity(diffs.len());
    for diff in diffs {
        let locate = |work: &[SetState], net: &IpNet| {
            work.iter()
                .position(|s| s.addresses.contains_key(net))
                .filter(|&i| sets[i].family == Family::of(net))
        };
        let mut refusal = None;
        for family in [Family::V4, Family::V6] {
            let new = diff
                .add
                .iter()
                .filter(|n| Family::of(n) == family && locate(&work, n).is_none())
                .count();
            if new == 0 {
                continue;
            }
            let leaving = diff
                .remove
                .iter()
                .filter(|n| Family::of(n) == family && locate(&work, n).is_some())
                .count();
            let free: usize = sets
                .iter()
                .zip(&work)
                .filter(|(s, _)| s.family == family)
                .map(|(s, w)| s.capacity.saturating_sub(w.len()))
                .sum::<usize>()
                + leaving;
            if new > free {
                let n_sets = sets.iter().filter(|s| s.family == family).count();
                refusal = Some(Error::LimitExceeded {
                    provider: NAME,
                    message: format!(
                        "{new} new {family} entries, room for {free} in {n_sets} {family} IP set(s)"
                    ),
                });
                break;
            }
        }
        if let Some(e) = refusal {
            outcomes.push(Err(e));
            continue;
        }
        for net in &diff.remove {
            if let Some(i) = locate(&work, net) {
                work[i].addresses.remove(net);
                counts[i].1 += 1;
                dirty[i] = true;
            }
        }
        for net in &diff.add {
            if locate(&work, net).is_some() {
                continue;
            }
            let family = Family::of(net);
            if let Some(i) = (0..sets.len())
                .find(|&i| sets[i].family == family && work[i].len() < sets[i].capacity)
            {
                work[i].addresses.insert(*net, net.to_string());
                counts[i].0 += 1;
                dirty[i] = true;
            }
        }
        outcomes.push(Ok(()));
    }
    let changed = work
        .into_iter()
        .zip(sets)
        .zip(dirty)
        .map(|((w, s), d)| (d && w != s.state).then_some(w))
        .collect();
    Plan {
        outcomes,
        changed,
        counts,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn state(items: &[&str]) -> SetState {
        let list: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        SetState::from_aws(&list, "t".into(), Some("d".into()))
    }

    fn set(family: Family, capacity: usize, items: &[&str]) -> PlanSet {
        PlanSet {
            family,
            capacity,
            state: state(items),
        }
    }

    fn nets(items: &[&str]) -> BTreeSet<IpNet> {
        items.iter().map(|s| parse_cidr(s).unwrap()).collect()
    }

    fn diff(add: &[&str], remove: &[&str]) -> Diff {
        Diff {
            add: nets(add),
            remove: nets(remove),
        }
    }

    #[test]
    fn fills_in_order_and_spills() {
        let sets = [
            set(Family::V4, 2, &["198.51.100.1/32"]),
            set(Family::V4, 2, &[]),
            set(Family::V6, 2, &[]),
        ];
        let d = diff(&["192.0.2.1", "192.0.2.2", "2001:db8::1"], &[]);
        let p = plan(&sets, &[&d]);
        assert!(p.outcomes[0].is_ok());
        let s0 = p.changed[0].as_ref().unwrap();
        let s1 = p.changed[1].as_ref().unwrap();
        let s2 = p.changed[2].as_ref().unwrap();
        assert_eq!(s0.len(), 2);
        assert_eq!(s1.len(), 1);
        assert_eq!(s2.to_list(), vec!["2001:db8::1/128".to_string()]);
        assert!(
            s0.addresses
                .contains_key(&parse_cidr("198.51.100.1").unwrap())
        );
    }

    #[test]
    fn overflow_refuses_the_whole_diff_and_later_diffs_still_apply() {
        let sets = [set(Family::V4, 2, &["198.51.100.1/32"])];
        let too_big = diff(&["192.0.2.1", "192.0.2.2"], &[]);
        let fits = diff(&["192.0.2.3"], &[]);
        let p = plan(&sets, &[&too_big, &fits]);
        assert!(matches!(p.outcomes[0], Err(Error::LimitExceeded { .. })));
        assert!(p.outcomes[1].is_ok());
        let s = p.changed[0].as_ref().unwrap();
        assert_eq!(
            s.addresses.keys().copied().collect::<BTreeSet<_>>(),
            nets(&["198.51.100.1", "192.0.2.3"])
        );
    }

    #[test]
    fn removes_make_room_first() {
        let sets = [set(Family::V4, 1, &["192.0.2.1/32"])];
        let swap = diff(&["192.0.2.2"], &["192.0.2.1"]);
        let p = plan(&sets, &[&swap]);
        assert!(p.outcomes[0].is_ok());
        assert_eq!(
            p.changed[0].as_ref().unwrap().to_list(),
            vec!["192.0.2.2/32".to_string()]
        );
    }

    #[test]
    fn foreign_and_unparsed_entries_survive_verbatim() {
        let sets = [set(
            Family::V4,
            10,
            &["10.1.2.3/8", "garbage", "203.0.113.9/32"],
        )];
        let d = diff(&["192.0.2.1"], &["192.0.2.9"]);
        let p = plan(&sets, &[&d]);
        let list = p.changed[0].as_ref().unwrap().to_list();
        for keep in ["10.1.2.3/8", "garbage", "203.0.113.9/32", "192.0.2.1/32"] {
            assert!(list.contains(&keep.to_string()), "{keep} in {list:?}");
        }
        assert_eq!(list.len(), 4);
    }

    #[test]
    fn later_diffs_win_and_no_ops_change_nothing() {
        let sets = [set(Family::V4, 10, &["192.0.2.1/32"])];
        let add = diff(&["192.0.2.5"], &[]);
        let undo = diff(&[], &["192.0.2.5"]);
        let p = plan(&sets, &[&add, &undo]);
        assert!(p.changed[0].is_none(), "add then remove is no change");
        let again = diff(&["192.0.2.1"], &["198.51.100.7"]);
        let p = plan(&sets, &[&again]);
        assert!(p.changed[0].is_none(), "present add and absent remove");
    }

    #[test]
    fn ipv6_prefixes_are_written_as_cidrs() {
        // The blocker blocks IPv6 clients as their /64: written as the prefix, host bits
        // cleared, in the IPv6 set, and read back as the same entry.
        let sets = [set(Family::V4, 10, &[]), set(Family::V6, 10, &[])];
        let d = diff(&["2a00:1450:4001:81c::/64", "2a00:1450:4001:800::/56"], &[]);
        let p = plan(&sets, &[&d]);
        assert!(p.outcomes[0].is_ok());
        assert!(p.changed[0].is_none());
        let list = p.changed[1].as_ref().unwrap().to_list();
        assert_eq!(
            list,
            vec![
                "2a00:1450:4001:800::/56".to_string(),
                "2a00:1450:4001:81c::/64".to_string()
            ]
        );
        let back = state(&list.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(back.unparsed.is_empty());
        let removed = diff(&[], &["2a00:1450:4001:81c::/64"]);
        let sets = [PlanSet {
            family: Family::V6,
            capacity: 10,
            state: back,
        }];
        let p = plan(&sets, &[&removed]);
        assert_eq!(
            p.changed[0].as_ref().unwrap().to_list(),
            vec!["2a00:1450:4001:800::/56".to_string()]
        );
    }

    #[test]
    fn coalesces_many_diffs_into_one_state_per_set() {
        let sets = [set(Family::V4, 10_000, &[]), set(Family::V6, 10_000, &[])];
        let diffs: Vec<Diff> = (0..500u32)
            .map(|i| {
                let v4 = format!("100.64.{}.{}", i / 256, i % 256);
                let v6 = format!("2001:db8::{i:x}");
                diff(&[&v4, &v6], &[])
            })
            .collect();
        let refs: Vec<&Diff> = diffs.iter().collect();
        let p = plan(&sets, &refs);
        assert!(p.outcomes.iter().all(Result::is_ok));
        assert_eq!(p.changed[0].as_ref().unwrap().len(), 500);
        assert_eq!(p.changed[1].as_ref().unwrap().len(), 500);
        assert_eq!(p.counts, vec![(500, 0), (500, 0)]);
    }
}
