//! Profile tables shaped like the ones users export from, for the performance harness.
//!
//! Where [`crate::write_profiles`] writes a friendly table (an `Int64` id in file order,
//! few columns, large row groups), this one looks like a warehouse export: a 20-character
//! string id in random order, emails on many domains, names in many scripts, low-cardinality
//! strings (Parquet dictionary-encodes them), a float with ties, a decimal, a timestamp with
//! a zone, a date and a boolean. Files hold 262,144 rows in row groups of 131,072, snappy,
//! as a Spark job or a pyarrow writer splits a table. The same mess as the friendly table
//! (missing, malformed and repeated emails, over-long fields) is mixed in.
//!
//! Output depends only on the settings, so the harness can keep a table between runs.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::{FIRST, LAST, PLACES, SEGMENTS, mix};

/// Rows per file and per row group, as Spark and pyarrow writers commonly leave them.
const FILE_ROWS: u64 = 262_144;
const GROUP_ROWS: usize = 131_072;
/// Rows generated at a time.
const BATCH_ROWS: u64 = 65_536;
/// 2025-01-01T00:00:00Z in microseconds, and two years of them.
const SEEN_FROM_US: i64 = 1_735_689_600_000_000;
const SEEN_SPAN_US: u64 = 2 * 365 * 86_400 * 1_000_000;

const DOMAINS: [&str; 8] = [
    "gmail.com",
    "yahoo.co.jp",
    "outlook.com",
    "example.org",
    "mail.ru",
    "gmx.de",
    "icloud.com",
    "corp.example.com",
];
const LATIN_FIRST: [&str; 16] = [
    "ada", "grace", "linus", "zoe", "jose", "bjorn", "lucja", "soren", "ivan", "maria", "giorgos",
    "misaki", "taro", "mohammed", "nguyen", "aoife",
];
const PLANS: [&str; 4] = ["free", "starter", "pro", "enterprise"];

/// Settings of a realistic table.
pub struct Realistic {
    pub rows: u64,
    pub out: PathBuf,
    /// Share of profiles in some segment.
    pub member_share: f64,
    pub seed: u64,
}

/// The realistic profile table's schema: the friendly table's columns, with a string id,
/// a plan, a balance and a last-seen time.
pub fn realistic_schema() -> SchemaRef {
    let friendly = crate::profile_schema();
    let column = |name: &str| {
        friendly
            .field_with_name(name)
            .expect("a friendly column")
            .clone()
    };
    let mut fields = vec![Field::new("customer_id", DataType::Utf8, false)];
    fields.extend(
        [
            "email",
            "first_name",
            "last_name",
            "country",
            "state",
            "city",
            "postal_code",
        ]
        .map(column),
    );
    fields.push(Field::new("plan", DataType::Utf8, false));
    fields.push(column("lifetime_value"));
    fields.push(Field::new("balance", DataType::Decimal128(12, 2), true));
    fields.push(column("is_subscribed"));
    fields.push(column("signup_date"));
    fields.push(Field::new(
        "last_seen_at",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        true,
    ));
    Arc::new(Schema::new(fields))
}

/// The membership table's schema: string ids.
fn membership_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("segment_name", DataType::Utf8, false),
    ]))
}

/// The string id of row `i`: a prefix and 16 hex digits, in no order the rows keep.
pub fn customer_id(seed: u64, i: u64) -> String {
    format!("cus_{:016x}", mix(seed ^ 0x1D5, i))
}

/// Rows `from..to` of the profile table, and their memberships appended to `members`.
fn batch(
    p: &Realistic,
    from: u64,
    to: u64,
    members: &mut Vec<(String, &'static str)>,
) -> RecordBatch {
    let n = (to - from) as usize;
    let mut strings: Vec<StringBuilder> = (0..9)
        .map(|_| StringBuilder::with_capacity(n, n * 16))
        .collect();
    let mut ltv = Float64Builder::with_capacity(n);
    let mut balance = Decimal128Builder::with_capacity(n);
    let mut subscribed = BooleanBuilder::with_capacity(n);
    let mut signup = Date32Builder::with_capacity(n);
    let mut seen = TimestampMicrosecondBuilder::with_capacity(n);
    for i in from..to {
        let r = mix(p.seed, i);
        let s = mix(p.seed ^ 0xA11CE, i);
        let id = customer_id(p.seed, i);
        let at = (r % 16) as usize;
        let first = FIRST[at];
        let last = LAST[((r >> 8) % 12) as usize];
        let (country, state, city) = PLACES[((r >> 16) % 8) as usize];
        let domain = DOMAINS[((s >> 8) % 8) as usize];
        let local = format!("{}{}.{i}", LATIN_FIRST[at], (s >> 16) % 100);
        let email = match (r >> 24) % 1000 {
            0..=19 => None,
            20..=29 => Some(format!("{local}.{domain}")),
            30..=34 => Some(format!("{local}@")),
            35..=39 => Some(format!("{} {i}@{domain}", LATIN_FIRST[at])),
            40..=69 => Some(format!("  {}@{} ", local.to_uppercase(), domain)),
            // The previous row's address in another spelling: one person, two rows.
            70..=89 if i > 0 => {
                let prev = mix(p.seed, i - 1);
                let prev_s = mix(p.seed ^ 0xA11CE, i - 1);
                let prev_at = (prev % 16) as usize;
                Some(format!(
                    "{}{}.{}@{}",
                    LATIN_FIRST[prev_at].to_uppercase(),
                    (prev_s >> 16) % 100,
                    i - 1,
                    DOMAINS[((prev_s >> 8) % 8) as usize]
                ))
            }
            _ => Some(format!("{local}@{domain}")),
        };
        let first = if (r >> 34).is_multiple_of(200) {
            first.repeat(12).into()
        } else {
            std::borrow::Cow::Borrowed(first)
        };
        let postal = format!("{:05}", (r >> 20) % 100_000);
        let values = [
            Some(id.as_str()),
            email.as_deref(),
            Some(&*first),
            (!(r >> 40).is_multiple_of(20)).then_some(last),
            Some(country),
            Some(state),
            Some(city),
            Some(postal.as_str()),
            Some(PLANS[((s >> 40) % 4) as usize]),
        ];
        for (b, v) in strings.iter_mut().zip(values) {
            b.append_option(v);
        }
        ltv.append_option(
            (!(r >> 50).is_multiple_of(50)).then(|| ((r >> 12) % 2_000_000) as f64 / 100.0),
        );
        balance.append_option(
            (!(s >> 50).is_multiple_of(10)).then(|| ((s >> 4) % 10_000_000) as i128 - 2_000_000),
        );
        subscribed.append_value(!(r >> 60).is_multiple_of(4));
        signup.append_option(Some(17_000 + ((r >> 28) % 3000) as i32));
        seen.append_option(
            (!(s >> 56).is_multiple_of(16)).then(|| SEEN_FROM_US + (s % SEEN_SPAN_US) as i64),
        );
        memberships(p, i, &id, members);
    }
    let mut columns: Vec<ArrayRef> = strings
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    columns.push(Arc::new(ltv.finish()));
    columns.push(Arc::new(
        balance
            .finish()
            .with_precision_and_scale(12, 2)
            .expect("a valid decimal type"),
    ));
    columns.push(Arc::new(subscribed.finish()));
    columns.push(Arc::new(signup.finish()));
    columns.push(Arc::new(seen.finish().with_timezone("UTC")));
    RecordBatch::try_new(realistic_schema(), columns).expect("columns match the schema")
}

/// The memberships of row `i`: some segments, sometimes listed twice.
fn memberships(p: &Realistic, i: u64, id: &str, out: &mut Vec<(String, &'static str)>) {
    let r = mix(p.seed ^ 0x5EED, i);
    if (r % 1_000_000) as f64 >= p.member_share * 1_000_000.0 {
        return;
    }
    let picks = (r >> 20) % 7 + 1;
    for (bit, segment) in SEGMENTS.iter().enumerate() {
        if picks & (1 << bit) != 0 {
            out.push((id.to_owned(), segment));
            if (r >> 40).is_multiple_of(10) {
                out.push((id.to_owned(), segment));
            }
        }
    }
}

fn writer(path: &std::path::Path, schema: SchemaRef) -> anyhow::Result<ArrowWriter<std::fs::File>> {
    use anyhow::Context;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(GROUP_ROWS))
        .build();
    Ok(ArrowWriter::try_new(file, schema, Some(props))?)
}

/// Writes one profile file (rows `from..to`); returns its memberships.
fn write_file(
    p: &Realistic,
    f: u64,
    from: u64,
    to: u64,
) -> anyhow::Result<Vec<(String, &'static str)>> {
    let path = p.out.join("profiles").join(format!("part-{f:05}.parquet"));
    let mut out = writer(&path, realistic_schema())?;
    let mut members = Vec::new();
    for start in (from..to).step_by(BATCH_ROWS as usize) {
        out.write(&batch(p, start, (start + BATCH_ROWS).min(to), &mut members))?;
    }
    out.close()?;
    Ok(members)
}

/// Writes `profiles/part-*.parquet` and `segment_memberships.parquet` under `p.out`, the
/// files on as many threads as the machine has cores.
pub fn write_realistic(p: &Realistic) -> anyhow::Result<()> {
    let files = p.rows.div_ceil(FILE_ROWS).max(1);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let mut members: Vec<Vec<(String, &'static str)>> = vec![Vec::new(); files as usize];
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || -> anyhow::Result<Vec<(u64, Vec<_>)>> {
                    (t..files)
                        .step_by(threads as usize)
                        .map(|f| {
                            let from = f * FILE_ROWS;
                            Ok((f, write_file(p, f, from, (from + FILE_ROWS).min(p.rows))?))
                        })
                        .collect()
                })
            })
            .collect();
        for worker in workers {
            let written = worker
                .join()
                .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
            for (f, m) in written {
                members[f as usize] = m;
            }
        }
        Ok(())
    })?;
    let mut out = writer(
        &p.out.join("segment_memberships.parquet"),
        membership_schema(),
    )?;
    let members: Vec<_> = members.into_iter().flatten().collect();
    for chunk in members.chunks(BATCH_ROWS as usize) {
        let mut id = StringBuilder::new();
        let mut seg = StringBuilder::new();
        for (c, s) in chunk {
            id.append_value(c);
            seg.append_value(s);
        }
        out.write(&RecordBatch::try_new(
            membership_schema(),
            vec![Arc::new(id.finish()), Arc::new(seg.finish())],
        )?)?;
    }
    out.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    #[test]
    fn ids_are_strings_in_no_order_and_the_mess_is_there() {
        let p = Realistic {
            rows: 4000,
            out: PathBuf::new(),
            member_share: 0.05,
            seed: 9,
        };
        let mut members = Vec::new();
        let b = batch(&p, 0, 4000, &mut members);
        let ids = b.column(0).as_string::<i32>();
        assert!(ids.iter().all(|id| id.is_some_and(|id| id.len() == 20)));
        let sorted = (1..ids.len())
            .filter(|&i| ids.value(i - 1) < ids.value(i))
            .count();
        assert!(
            (1000..3000).contains(&sorted),
            "ids in random order: {sorted}"
        );
        let emails = b.column(1).as_string::<i32>();
        assert!(emails.null_count() > 0);
        assert!(emails.iter().flatten().any(|e| e.starts_with("  ")));
        assert!(
            b.column(2)
                .as_string::<i32>()
                .iter()
                .flatten()
                .any(|n| n.chars().count() > 50)
        );
        assert!(members.len() > 100 && members.iter().all(|(id, _)| id.starts_with("cus_")));
        let again = batch(&p, 0, 4000, &mut Vec::new());
        assert_eq!(b, again, "generation is deterministic");
    }
}
