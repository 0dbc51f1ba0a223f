//! Mirror mode: which contacts left the segments, whether the mass-removal guard lets them
//! go, and taking them off the lists (membership only: no contact is ever deleted).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use pipeline_spec::Identifier;
use sendgrid_client::{Client, ClientError, MAX_SEARCH_EMAIL_CHARS};
use serde::Serialize;

use crate::{Diff, RemovalOutcome, SyncReport};

/// The leavers of one run: by list, all of them, and the largest share of a list they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Removals {
    pub by_list: BTreeMap<String, Vec<String>>,
    pub leavers: Vec<String>,
    pub share: f64,
}

impl Removals {
    /// The contacts `diff` never saw, but for `protected` ones (members this run rejected:
    /// still members, only not sendable now), grouped by the export's lists.
    pub fn plan(diff: &Diff, list_ids: &[String], protected: &[String]) -> Self {
        let protected: HashSet<&str> = protected.iter().map(String::as_str).collect();
        let leavers: Vec<(String, Arc<str>)> = diff
            .leavers()
            .into_iter()
            .filter(|(email, _)| !protected.contains(email.as_str()))
            .collect();
        let mut by_list: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut share: f64 = 0.0;
        for list in list_ids {
            let emails: Vec<String> = leavers
                .iter()
                .filter(|(_, lists)| lists.split(',').any(|l| l == list))
                .map(|(e, _)| e.clone())
                .collect();
            let on_list = diff.known_on_list(list);
            if on_list > 0 {
                share = share.max(emails.len() as f64 / on_list as f64);
            }
            if !emails.is_empty() {
                by_list.insert(list.clone(), emails);
            }
        }
        Self {
            by_list,
            leavers: leavers.into_iter().map(|(e, _)| e).collect(),
            share,
        }
    }

    /// Records the leavers and the guard's verdict in `report`; true when the guard
    /// refuses (more than `max_removal_share` of a list, and no `allow`).
    pub fn guard(&self, report: &mut SyncReport, allow: bool) -> bool {
        report.leavers = self.leavers.len() as u64;
        report.removal_share = (self.share * 10_000.0).round() / 10_000.0;
        let refused = self.share > report.max_removal_share && !allow;
        if refused {
            report.removal = RemovalOutcome::Refused;
        }
        refused
    }
}

/// What taking leavers off a list did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Removal {
    pub list_id: String,
    /// Contacts whose membership was removed.
    pub removed: u64,
    /// Leavers SendGrid does not know (nothing to remove): never imported, deleted in
    /// SendGrid, or an address SendGrid calls invalid. They count as removed.
    pub not_found: u64,
    pub requests: u64,
}

/// Contact ids are looked up this many emails at a time (SendGrid's limit).
pub const SEARCH_BATCH: usize = 100;
/// Memberships are removed this many contact ids per request.
pub const REMOVE_BATCH: usize = 100;

/// Takes the contacts keyed `keys` by identifier `key` off list `list_id`: membership
/// only, the contacts stay in the account. Keys are looked up by [`SEARCH_BATCH`] (emails
/// through search by emails, but for addresses longer than it takes; other identifiers
/// through the identifiers search), memberships removed by [`REMOVE_BATCH`]. A batch that
/// SendGrid refuses because one value is invalid (400), or because one contact vanished
/// between lookup and removal (404), is split until the culprit stands alone; it then
/// counts as not found. A missing list is an error.
pub async fn remove_from_list(
    client: &Client,
    list_id: &str,
    key: Identifier,
    keys: &[String],
) -> Result<Removal, ClientError> {
    let mut out = Removal {
        list_id: list_id.to_owned(),
        ..Default::default()
    };
    let (short, long): (Vec<String>, Vec<String>) = keys
        .iter()
        .cloned()
        .partition(|e| key == Identifier::Email && e.chars().count() <= MAX_SEARCH_EMAIL_CHARS);
    let mut ids = Vec::new();
    for (keys, search) in [(short, None), (long, Some(key))] {
        for chunk in keys.chunks(SEARCH_BATCH) {
            look_up(client, chunk, search, &mut ids, &mut out).await?;
        }
    }
    let mut list_checked = false;
    let mut pending: Vec<&[String]> = ids.chunks(REMOVE_BATCH).rev().collect();
    while let Some(part) = pending.pop() {
        out.requests += 1;
        match client.remove_list_contacts(list_id, part).await {
            Ok(_) => out.removed += part.len() as u64,
            Err(e @ ClientError::NotFound { .. }) => {
                // One 404 means the list is gone or a contact is: ask which, once.
                if !list_checked {
                    out.requests += 1;
                    if client.get_list(list_id).await?.is_none() {
                        return Err(e);
                    }
                    list_checked = true;
                }
                if part.len() == 1 {
                    out.not_found += 1;
                } else {
                    let (a, b) = part.split_at(part.len() / 2);
                    pending.extend([b, a]);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Looks `keys` up (through the identifiers search for `identifier`, or by emails),
/// splitting a batch SendGrid refuses for an invalid value.
async fn look_up(
    client: &Client,
    keys: &[String],
    identifier: Option<Identifier>,
    ids: &mut Vec<String>,
    out: &mut Removal,
) -> Result<(), ClientError> {
    let mut pending = vec![keys];
    while let Some(part) = pending.pop() {
        out.requests += 1;
        let found = match identifier {
            Some(identifier) => client.search_identifiers(identifier.name(), part).await,
            None => client.search_emails(part).await,
        };
        match found {
            Ok(found) => {
                for (_, id) in found {
                    match id {
                        Some(id) => ids.push(id),
                        None => out.not_found += 1,
                    }
                }
            }
            Err(ClientError::Rejected { status: 400, .. }) if part.len() > 1 => {
                let (a, b) = part.split_at(part.len() / 2);
                pending.extend([b, a]);
            }
            // SendGrid calls the address invalid: it cannot be a contact.
            Err(ClientError::Rejected { status: 400, .. }) => out.not_found += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EMAIL;
    use crate::{Entry, Known, Snapshot};
    use pipeline_spec::IdentifierSet;

    /// A snapshot of `n` contacts on list `l1`, the first `on_l2` of them also on `l2`.
    fn diff(n: usize, on_l2: usize) -> Diff {
        let mut snapshot = Snapshot::default();
        for i in 0..n {
            let lists = if i < on_l2 { "l1,l2" } else { "l1" };
            snapshot.entries.insert(
                format!("c{i:02}@x.io"),
                Entry {
                    hash: 1,
                    lists: lists.into(),
                    synced_at: 0,
                    refused: None,
                    identifiers: IdentifierSet::default(),
                },
            );
        }
        Diff::new(
            Known::new(&snapshot, &[]),
            &["l1".into(), "l2".into()],
            false,
        )
    }

    fn report(max_removal_share: f64) -> SyncReport {
        SyncReport {
            max_removal_share,
            ..Default::default()
        }
    }

    #[test]
    fn leavers_are_the_known_contacts_the_run_never_saw_grouped_by_list() {
        let mut diff = diff(10, 2);
        for i in 2..9 {
            diff.admit(&format!("c{i:02}@x.io"), 1, EMAIL);
        }
        let removals = Removals::plan(&diff, &["l1".into(), "l2".into()], &[]);
        assert_eq!(removals.leavers, ["c00@x.io", "c01@x.io", "c09@x.io"]);
        assert_eq!(removals.by_list["l1"], ["c00@x.io", "c01@x.io", "c09@x.io"]);
        assert_eq!(removals.by_list["l2"], ["c00@x.io", "c01@x.io"]);
        // Both contacts on l2 left: the share is the largest over the lists.
        assert_eq!(removals.share, 1.0);
    }

    #[test]
    fn rejected_members_are_never_removed() {
        let mut diff = diff(4, 0);
        diff.admit("c00@x.io", 1, EMAIL);
        let protected = vec!["c01@x.io".to_string()];
        let removals = Removals::plan(&diff, &["l1".into()], &protected);
        assert_eq!(removals.leavers, ["c02@x.io", "c03@x.io"]);
        assert_eq!(removals.share, 0.5);
    }

    #[test]
    fn the_guard_trips_above_the_share_unless_allowed() {
        let mut diff = diff(10, 0);
        for i in 0..7 {
            diff.admit(&format!("c{i:02}@x.io"), 1, EMAIL);
        }
        let removals = Removals::plan(&diff, &["l1".into()], &[]);
        let mut at_limit = report(0.3);
        assert!(
            !removals.guard(&mut at_limit, false),
            "30% of 10 is allowed"
        );
        assert_eq!(at_limit.removal, RemovalOutcome::None);
        assert_eq!((at_limit.leavers, at_limit.removal_share), (3, 0.3));

        let mut over = report(0.25);
        assert!(removals.guard(&mut over, false));
        assert_eq!(over.removal, RemovalOutcome::Refused);
        assert!(over.removal_refused());

        let mut allowed = report(0.25);
        assert!(!removals.guard(&mut allowed, true));
        assert_eq!(allowed.removal, RemovalOutcome::None);
    }
}
