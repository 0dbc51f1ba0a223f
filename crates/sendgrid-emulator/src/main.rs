//! `sendgrid-emulator`: the local SendGrid Marketing API emulator, standalone on loopback.

use std::net::{IpAddr, SocketAddr};

use clap::Parser;
use sendgrid_emulator::{
    Config, DEFAULT_WINDOW_MS, Emulator, Faults, KeyConfig, RateLimits, marketing_scopes,
};

/// Each upload is parsed into about a million small JSON values and freed again when its
/// import runs; glibc's allocator spent most of the emulator's time consolidating them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serve a local SendGrid Marketing API emulator on a loopback address.
#[derive(Parser)]
#[command(name = "sendgrid-emulator")]
struct Args {
    /// Address to listen on; only loopback addresses are accepted.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// An API key with full Marketing permissions (repeatable).
    #[arg(long = "key")]
    keys: Vec<String>,
    /// An API key without Marketing permissions (answers 403 on Marketing endpoints).
    #[arg(long = "key-without-marketing")]
    restricted_keys: Vec<String>,
    /// How long import jobs stay pending, in milliseconds (live: about 20 s and more).
    #[arg(long, default_value_t = 0)]
    import_delay_ms: u64,
    /// Requests allowed per rate-limit window in every endpoint family, instead of the
    /// live limits (200 for contacts endpoints, 600 for lists and field definitions).
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Length of the rate-limit window, in milliseconds.
    #[arg(long, default_value_t = DEFAULT_WINDOW_MS)]
    rate_window_ms: u64,
    /// Send `X-RateLimit-Reset` as a Unix time instead of seconds until the reset.
    #[arg(long)]
    unix_resets: bool,
    /// One import job in this many ends `failed` (0: none).
    #[arg(long, default_value_t = 0)]
    fail_one_job_in: u32,
    /// Errors-file links expire this many milliseconds after their job ends.
    #[arg(long)]
    errors_file_ttl_ms: Option<u64>,
    /// A list that exists from the start: ID or ID=NAME (repeatable).
    #[arg(long = "list")]
    lists: Vec<String>,
    /// A custom field that exists from the start: NAME=Text|Number|Date (repeatable).
    #[arg(long = "field")]
    fields: Vec<String>,
    /// Scripted faults as JSON, e.g. '{"upserts":[{"kind":"status","status":500}]}'.
    #[arg(long)]
    faults: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.host.is_loopback(),
        "the emulator listens on loopback addresses only"
    );
    let mut keys: Vec<KeyConfig> = args
        .keys
        .into_iter()
        .map(|key| KeyConfig {
            key,
            scopes: marketing_scopes(),
        })
        .collect();
    keys.extend(args.restricted_keys.into_iter().map(|key| KeyConfig {
        key,
        scopes: vec!["mail.send".into()],
    }));
    let config = Config {
        keys,
        import_delay_ms: args.import_delay_ms,
        rate_limits: Some(RateLimits {
            unix_resets: args.unix_resets,
            ..match args.rate_limit {
                Some(limit) => RateLimits::uniform(limit, args.rate_window_ms),
                None => RateLimits::live(args.rate_window_ms),
            }
        }),
        fail_one_job_in: args.fail_one_job_in,
        errors_file_ttl_ms: args.errors_file_ttl_ms,
        suppressions: Vec::new(),
        lists: args
            .lists
            .into_iter()
            .map(|l| match l.split_once('=') {
                Some((id, name)) => (id.to_owned(), name.to_owned()),
                None => (l.clone(), l),
            })
            .collect(),
        custom_fields: args
            .fields
            .into_iter()
            .map(|f| match f.split_once('=') {
                Some((name, kind)) => (name.to_owned(), kind.to_owned()),
                None => (f, "Text".to_owned()),
            })
            .collect(),
    };
    for (name, kind) in &config.custom_fields {
        anyhow::ensure!(
            matches!(kind.as_str(), "Text" | "Number" | "Date"),
            "--field {name}={kind}: the type is Text, Number or Date"
        );
    }
    for (id, _) in &config.lists {
        anyhow::ensure!(
            uuid::Uuid::parse_str(id).is_ok(),
            "--list {id}: a list id is a UUID, as SendGrid's are (0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11=Newsletter)"
        );
    }
    if config.keys.is_empty() {
        eprintln!(
            "note: no --key given, so every request is refused (401); give the key the pipeline's connection uses: --key \"$SENDGRID_API_KEY\""
        );
    }
    let address = SocketAddr::new(args.host, args.port);
    let emulator = Emulator::bind(config, address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
    if let Some(faults) = args.faults {
        let faults: Faults = serde_json::from_str(&faults).map_err(|e| {
            anyhow::anyhow!(
                "--faults: {e} (e.g. '{{\"upserts\":[{{\"kind\":\"status\",\"status\":500}}]}}')"
            )
        })?;
        emulator.script(faults);
    }
    println!("{}", emulator.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
