//! `pipeline-datagen`: writes messy customer-profile Parquet tables.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pipeline-datagen",
    about = "Write messy customer-profile Parquet tables"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The small hand-written quickstart dataset.
    Sample {
        #[arg(long, default_value = "pipelines/data")]
        out: PathBuf,
    },
    /// A generated table of ROWS profiles plus a segment-membership table.
    Profiles {
        #[arg(long)]
        rows: u64,
        #[arg(long)]
        out: PathBuf,
        /// Files the profiles are split into.
        #[arg(long, default_value_t = 4)]
        files: u64,
        /// Share of profiles that are members of some segment.
        #[arg(long, default_value_t = 0.01)]
        member_share: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// A table shaped like a warehouse export: string ids in random order, many column
    /// types, files of 262,144 rows in row groups of 131,072; plus its memberships.
    Realistic {
        #[arg(long)]
        rows: u64,
        #[arg(long)]
        out: PathBuf,
        /// Share of profiles that are members of some segment.
        #[arg(long, default_value_t = 0.014)]
        member_share: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Sample { out } => pipeline_datagen::write_sample(&out),
        Command::Profiles {
            rows,
            out,
            files,
            member_share,
            seed,
        } => pipeline_datagen::write_profiles(&pipeline_datagen::Profiles {
            rows,
            out,
            files,
            member_share,
            seed,
        }),
        Command::Realistic {
            rows,
            out,
            member_share,
            seed,
        } => pipeline_datagen::write_realistic(&pipeline_datagen::Realistic {
            rows,
            out,
            member_share,
            seed,
        }),
    }
}
