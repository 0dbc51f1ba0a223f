//! Talking to SendGrid: clients per connection, the SendGrid sink and `pipeline check`.

use std::collections::BTreeMap;
use std::time::Duration;

use pipeline_engine::ExportQuery;
use pipeline_sendgrid::{SendgridSettings, SendgridSink};
use pipeline_spec::{Export, Pipeline};
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
            let key = pipeline_spec::resolve_api_key(name, connection, pipeline.base_dir(), &|v| {
                std::env::var(v).ok()
            })
            .map_err(|message| Failure {
                exit: Exit::Config,
                message,
            })?;
            crate::hide_key(key.expose());
            if pipeline.redactions.any_contains(key.expose()) {
                return Err(Failure {
                    exit: Exit::Config,
                    message: format!(
                        "connections.{name}: its API key also comes into another field of the file through a `${{VAR}}`: the key may only be a connection's api_key, so that it never reaches a field, a file or SendGrid"
                    ),
                });
            }
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

/// `pipeline check`: one verdict per connection and per list and custom field of each export.
pub async fn check(
    pipeline: &Pipeline,
    queries: &[ExportQuery],
    local: Option<&LocalEmulator>,
) -> Vec<Verdict> {
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
                    subject,
                    "Marketing read and write permissions present".into(),
                ));
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
            Err(e) => verdicts.push(Verdict::fail(subject, e.to_string())),
        }
    }
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
        for id in &export.list_ids {
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
