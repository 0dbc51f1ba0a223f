//! Talking to SendGrid: clients per connection, the SendGrid sink and `pipeline check`.

use std::collections::BTreeMap;
use std::time::Duration;

use pipeline_engine::ExportQuery;
use pipeline_sendgrid::suppressions::{SuppressionStage, Suppressions};
use pipeline_sendgrid::{SendgridSettings, SendgridSink};
use pipeline_spec::{Classified, Export, Pipeline};
use sendgrid_client::{Client, ClientError, RetryPolicy, has_marketing_access};

use crate::local::LocalEmulator;
use crate::output::Verdict;
use crate::{Exit, Failure};

/// A client for connection `name`: its endpoint and key, or the local emulator's.
pub fn client_for(
    pipeline: &Pipeline,
    name: &str,
    local: Option<&LocalEmulator>,
) -> Result<Client, Failure> {
    let connection = &pipeline.file.connections[name];
    let (endpoint, key) = match local {
        Some(l) => (l.url(), l.key()),
        None => {
            let key = pipeline_spec::resolve_api_key(
                name,
                connection,
                pipeline.key_base_dir(name),
                &|v| std::env::var(v).ok(),
            )
            .map_err(|message| Failure {
                exit: Exit::Config,
                message,
            })?;
            // Hidden and checked when the pipeline was opened; hidden again in case the
            // key changed on disk since.
            crate::hide_key(key.expose());
            (
                connection
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| "global".into()),
                key,
            )
        }
    };
    let policy = RetryPolicy {
        max_attempts: connection.max_attempts,
        rate_limit_budget: Duration::from_secs(connection.rate_limit_wait_secs),
        ..RetryPolicy::default()
    };
    let source = match (local, &connection.api_key, &connection.api_key_file) {
        (Some(_), ..) => "the local emulator's key".to_owned(),
        (None, Some(reference), _) => format!("connection {name}'s API key (from {reference})"),
        (None, None, Some(file)) => format!("connection {name}'s API key (from the file {file})"),
        (None, None, None) => format!("connection {name}'s API key"),
    };
    Client::new(
        &endpoint,
        key.into(),
        Duration::from_secs(connection.request_timeout_secs),
        policy,
    )
    .map(|client| client.with_key_source(source))
    .map_err(|e| Failure {
        exit: Exit::Config,
        message: format!("connections.{name}: {e}"),
    })
}

/// The SendGrid sink for an export.
pub fn sendgrid_sink(
    client: Client,
    concurrency: usize,
    export: &Export,
    query: &ExportQuery,
) -> SendgridSink {
    let settings = SendgridSettings {
        concurrency,
        wait_for_import: export.wait_for_import,
        import_timeout: Duration::from_secs(export.import_timeout_secs),
        create_missing_fields: export.create_missing_fields,
    };
    SendgridSink::new(client, settings).with_custom_types(&query.custom_field_types)
}

/// The base URL export `name`'s connection sends to.
pub fn endpoint_of(pipeline: &Pipeline, name: &str) -> String {
    let connection = pipeline
        .export(name)
        .and_then(|e| pipeline.file.connections.get(&e.connection));
    sendgrid_client::base_url_for(
        connection
            .and_then(|c| c.endpoint.as_deref())
            .unwrap_or("global"),
    )
}

/// `pipeline check`, first part: one verdict per connection (key, permissions, the
/// account's contacts), and a client for each connection that passed.
pub async fn check_connections(
    pipeline: &Pipeline,
    local: Option<&LocalEmulator>,
) -> (Vec<Verdict>, BTreeMap<String, Client>) {
    let mut verdicts = Vec::new();
    let mut usable: BTreeMap<String, Client> = BTreeMap::new();
    for name in pipeline.file.connections.keys() {
        let subject = format!("connection {name}");
        let client = match client_for(pipeline, name, local) {
            Ok(c) => c,
            Err(f) => {
                verdicts.push(Verdict::fail(subject, f.message));
                continue;
            }
        };
        match client.scopes().await {
            Ok(scopes) if has_marketing_access(&scopes) => {
                verdicts.push(Verdict::pass(subject.clone(), "API key accepted".into()));
                verdicts.push(Verdict::pass(
                    subject.clone(),
                    "Marketing read and write permissions present".into(),
                ));
                // What the account holds, beside the contacts a run would add.
                match client.contact_count().await {
                    Ok(count) => verdicts.push(Verdict::pass(
                        subject,
                        format!(
                            "the account holds {} contact(s), {} billable this month",
                            count.contact_count, count.billable_count
                        ),
                    )),
                    Err(e) => verdicts.push(Verdict::fail(subject, e.to_string())),
                }
                usable.insert(name.clone(), client);
            }
            Ok(_) => {
                verdicts.push(Verdict::pass(subject.clone(), "API key accepted".into()));
                let key = format!("connection {name}'s API key");
                verdicts.push(Verdict::fail(
                    subject,
                    ClientError::Forbidden { key }.to_string(),
                ));
            }
            // Every SendGrid account has its key's scopes: a 404 says the endpoint is not
            // SendGrid's API (a gateway's path missing, another service).
            Err(ClientError::NotFound { .. }) => verdicts.push(Verdict::fail(
                subject,
                format!(
                    "{} answered 404 (not found) for /v3/scopes, which SendGrid's API always has: check the connection's endpoint (global is {})",
                    client.base_url(),
                    sendgrid_client::base_url_for("global")
                ),
            )),
            Err(e) => verdicts.push(Verdict::fail(subject, e.to_string())),
        }
    }
    (verdicts, usable)
}

/// `pipeline check`, second part: one verdict per list and custom field of each export,
/// through the clients of the connections that passed.
pub async fn check_exports(
    pipeline: &Pipeline,
    queries: &[ExportQuery],
    usable: &BTreeMap<String, Client>,
) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    for query in queries {
        let export = pipeline
            .export(&query.export)
            .expect("planned from the pipeline");
        let Some(client) = usable.get(&export.connection) else {
            verdicts.push(Verdict::fail(
                format!("export {}", export.name),
                format!("not checked: connection {} failed", export.connection),
            ));
            continue;
        };
        // A list a run would create (a preview's placeholder) has nothing to check yet.
        for id in export
            .list_ids
            .iter()
            .filter(|id| pipeline_spec::is_uuid(id))
        {
            let subject = format!("export {} list {id}", export.name);
            verdicts.push(match client.get_list(id).await {
                Ok(Some(list)) => Verdict::pass(
                    subject,
                    format!("exists ({}, {} contacts)", list.name, list.contact_count),
                ),
                Ok(None) => {
                    Verdict::fail(subject, "does not exist: create it or fix list_ids".into())
                }
                Err(e) => Verdict::fail(subject, e.to_string()),
            });
        }
        if query.custom_field_types.is_empty() {
            continue;
        }
        match client.field_definitions().await {
            Ok(defs) => {
                for (name, ours) in &query.custom_field_types {
                    let subject = format!("export {} custom field {name}", export.name);
                    let found = pipeline_sendgrid::find_field(&defs.custom_fields, name);
                    let mismatch = found.and_then(|d| {
                        pipeline_sendgrid::type_mismatch(
                            d,
                            pipeline_sendgrid::field_type_named(ours),
                        )
                    });
                    verdicts.push(match (found, mismatch) {
                        (_, Some(why)) => Verdict::fail(subject, why),
                        (Some(d), None) if d.name != *name => Verdict::pass(
                            subject,
                            format!("exists as {} (id {}, {:?}); names match whatever their case", d.name, d.id, d.field_type),
                        ),
                        (Some(d), None) => Verdict::pass(subject, format!("exists (id {}, {:?})", d.id, d.field_type)),
                        (None, _) if export.create_missing_fields => {
                            Verdict::pass(subject, "missing; the run creates it (create_missing_fields)".into())
                        }
                        (None, _) => Verdict::fail(
                            subject,
                            "does not exist: create it in SendGrid, or set create_missing_fields: true".into(),
                        ),
                    });
                }
            }
            Err(e) => verdicts.push(Verdict::fail(
                format!("export {} custom fields", export.name),
                e.to_string(),
            )),
        }
    }
    verdicts
}

/// The suppression stage of `export`, when its lists are wanted (`plan --suppressions`)
/// or it skips suppressed contacts: the account's five suppression lists, read now.
pub async fn suppression_stage(
    pipeline: &Pipeline,
    export: &Export,
    local: Option<&LocalEmulator>,
    wanted: bool,
) -> Result<Option<SuppressionStage>, Failure> {
    // The lists hold addresses: without a mapped email there is nothing to match
    // (validate refuses `skip_suppressed` then; plan notes it).
    if (!wanted && !export.skip_suppressed) || export.mapping.email.is_none() {
        return Ok(None);
    }
    let client = client_for(pipeline, &export.connection, local)?;
    let list = Suppressions::fetch(&client).await.map_err(|e| {
        Failure::of(
            e.kind(),
            &format!(
                "export `{}`: reading the suppression lists: {e}",
                export.name
            ),
        )
    })?;
    tracing::debug!(export = %export.name, suppressed = list.len(), "Read the suppression lists");
    Ok(Some(SuppressionStage::new(list, export.skip_suppressed)))
}

/// How one named list was resolved.
#[derive(Debug, Clone)]
pub struct NamedList {
    pub export: String,
    pub name: String,
    /// The list's id; for a list a preview would create, a placeholder naming it.
    pub id: String,
    pub outcome: ListOutcome,
}

/// What resolving a list's name found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOutcome {
    Found,
    Created,
    /// A preview of `create_missing_lists`: a run would create it.
    ToBeCreated,
}

/// Whether missing named lists may be created now (a run) or only shown (a preview).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    Run,
    Preview,
}

/// Resolves the lists the exports in `only` (all by default) name, through each export's
/// connection (paged `GET /v3/marketing/lists`), and adds their ids to the exports'
/// `list_ids`. A missing list is created when the export allows it and this is a run; a
/// name two lists share is an error that lists their ids.
pub async fn resolve_named_lists(
    pipeline: &mut Pipeline,
    only: &[String],
    local: Option<&LocalEmulator>,
    mode: Resolve,
) -> Result<Vec<NamedList>, Failure> {
    let mut resolved = Vec::new();
    for i in 0..pipeline.file.exports.len() {
        let export = &pipeline.file.exports[i];
        if export.lists.is_empty() || !pipeline_spec::is_selected(only, &export.name) {
            continue;
        }
        let (name, connection) = (export.name.clone(), export.connection.clone());
        let client = client_for(pipeline, &connection, local)?;
        let remote = |e: ClientError| {
            let e = pipeline_sendgrid::sink_error(e);
            Failure::of(
                e.kind(),
                &format!("export `{name}`: resolving its lists by name: {e}"),
            )
        };
        let all = client.all_lists().await.map_err(remote)?;
        let export = &pipeline.file.exports[i];
        let mut ids = Vec::new();
        for wanted in &export.lists {
            let found: Vec<&sendgrid_client::List> =
                all.iter().filter(|l| l.name == wanted.name).collect();
            let (id, outcome) = match found.as_slice() {
                [one] => (one.id.clone(), ListOutcome::Found),
                [] if export.create_missing_lists && mode == Resolve::Run => {
                    let created = client.create_list(&wanted.name).await.map_err(remote)?;
                    tracing::info!(export = %name, list = %wanted.name, id = %created.id, "Created a list");
                    (created.id, ListOutcome::Created)
                }
                [] if export.create_missing_lists => (
                    format!("(new list {})", wanted.name),
                    ListOutcome::ToBeCreated,
                ),
                [] => {
                    return Err(Failure {
                        exit: Exit::Config,
                        message: format!(
                            "export `{name}`: no list is named `{}` in this SendGrid account: create it, fix the name, or set create_missing_lists: true",
                            wanted.name
                        ),
                    });
                }
                many => {
                    let ids: Vec<&str> = many.iter().map(|l| l.id.as_str()).collect();
                    return Err(Failure {
                        exit: Exit::Config,
                        message: format!(
                            "export `{name}`: {} lists are named `{}` ({}): name the one you mean by its id in list_ids",
                            many.len(),
                            wanted.name,
                            ids.join(", ")
                        ),
                    });
                }
            };
            resolved.push(NamedList {
                export: name.clone(),
                name: wanted.name.clone(),
                id: id.clone(),
                outcome,
            });
            ids.push(id);
        }
        let list_ids = &mut pipeline.file.exports[i].list_ids;
        for id in ids {
            if !list_ids.iter().any(|known| known.eq_ignore_ascii_case(&id)) {
                list_ids.push(id);
            }
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sendgrid_client::{Client, RetryPolicy};

    /// The pipeline file's endpoint check and the HTTP client's read every URL alike:
    /// a URL one accepts and the other refuses is where a key could go astray.
    #[test]
    fn the_file_and_the_client_agree_on_every_endpoint() {
        for endpoint in [
            "global",
            "eu",
            "https://api.sendgrid.com",
            "https://api.sendgrid.com/",
            "http://127.0.0.1:9",
            "http://[::1]:9",
            "http://localhost:9",
            "http://127.0.0.1@evil.example/",
            "http://evil.example#@127.0.0.1/",
            "http://evil.example?@127.0.0.1/",
            "https://user:pass@api.sendgrid.com",
            "http://127.0.0.1.evil.example/",
            "http://0x7f000001/",
            "http://api.sendgrid.com",
            "https://api.sendgrid.com/?x=1",
            "ftp://127.0.0.1/",
            "127.0.0.1:9",
            "https://",
            "not a url",
        ] {
            let file = pipeline_spec::check_endpoint(endpoint).is_ok();
            let client = Client::new(
                endpoint,
                "k".to_owned().into(),
                Duration::from_secs(1),
                RetryPolicy::default(),
            )
            .is_ok();
            assert_eq!(file, client, "{endpoint}: file {file}, client {client}");
        }
    }
}
