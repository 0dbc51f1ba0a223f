//! Messy customer-profile tables: the quickstart sample and generated tables of any size.
//!
//! The mess is what real profile tables carry: missing and malformed emails, the same
//! address in several spellings, names in many scripts, fields longer than SendGrid
//! allows, and segment memberships that overlap and repeat. Output depends only on the
//! arguments (seeded), so tests can compare it with expected results. [`write_realistic`]
//! writes the performance harness's tables, shaped like warehouse exports.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

mod realistic;
pub use realistic::{Realistic, customer_id, realistic_schema, write_realistic};

/// Rows per generated record batch and Parquet row group.
const BATCH_ROWS: u64 = 65_536;
/// Segment names in the membership table.
pub const SEGMENTS: [&str; 3] = ["vip", "newsletter", "winback"];

/// The profile table's schema.
pub fn profile_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("email", DataType::Utf8, true),
        Field::new("first_name", DataType::Utf8, true),
        Field::new("last_name", DataType::Utf8, true),
        Field::new("country", DataType::Utf8, true),
        Field::new("state", DataType::Utf8, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("postal_code", DataType::Utf8, true),
        Field::new("lifetime_value", DataType::Float64, true),
        Field::new("is_subscribed", DataType::Boolean, false),
        Field::new("signup_date", DataType::Date32, true),
    ]))
}

/// The membership table's schema.
pub fn membership_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("segment_name", DataType::Utf8, false),
    ]))
}

/// One profile row.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub customer_id: i64,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub country: Option<String>,
    pub state: Option<String>,
    pub city: Option<String>,
    pub postal_code: Option<String>,
    pub lifetime_value: Option<f64>,
    pub is_subscribed: bool,
    /// Days since 1970-01-01.
    pub signup_date: Option<i32>,
}

/// Profiles as one record batch.
pub fn profile_batch(rows: &[Profile]) -> RecordBatch {
    let n = rows.len();
    let mut id = Int64Builder::with_capacity(n);
    let mut strings: Vec<StringBuilder> = (0..7)
        .map(|_| StringBuilder::with_capacity(n, n * 12))
        .collect();
    let mut ltv = Float64Builder::with_capacity(n);
    let mut subscribed = BooleanBuilder::with_capacity(n);
    let mut signup = Date32Builder::with_capacity(n);
    for p in rows {
        id.append_value(p.customer_id);
        for (b, v) in strings.iter_mut().zip([
            &p.email,
            &p.first_name,
            &p.last_name,
            &p.country,
            &p.state,
            &p.city,
            &p.postal_code,
        ]) {
            b.append_option(v.as_deref());
        }
        ltv.append_option(p.lifetime_value);
        subscribed.append_value(p.is_subscribed);
        signup.append_option(p.signup_date);
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(id.finish())];
    columns.extend(strings.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(Arc::new(ltv.finish()));
    columns.push(Arc::new(subscribed.finish()));
    columns.push(Arc::new(signup.finish()));
    RecordBatch::try_new(profile_schema(), columns).expect("columns match the schema")
}

/// Memberships as one record batch.
pub fn membership_batch(rows: &[(i64, &str)]) -> RecordBatch {
    let mut id = Int64Builder::with_capacity(rows.len());
    let mut seg = StringBuilder::new();
    for (c, s) in rows {
        id.append_value(*c);
        seg.append_value(s);
    }
    RecordBatch::try_new(
        membership_schema(),
        vec![Arc::new(id.finish()), Arc::new(seg.finish())],
    )
    .expect("columns match the schema")
}

/// Writes batches to a Parquet file, one row group per batch.
pub fn write_parquet(
    path: &Path,
    schema: SchemaRef,
    batches: impl IntoIterator<Item = RecordBatch>,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(BATCH_ROWS as usize))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema, Some(props))?;
    for batch in batches {
        writer.write(&batch)?;
    }
    writer.close()?;
    Ok(())
}

/// Settings of a generated table.
pub struct Profiles {
    pub rows: u64,
    pub out: PathBuf,
    pub files: u64,
    /// Share of profiles in some segment.
    pub member_share: f64,
    pub seed: u64,
}

/// A deterministic 64-bit mix (splitmix64) of a seed and a row number.
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const FIRST: [&str; 16] = [
    "Ada",
    "Grace",
    "Linus",
    "Zoë",
    "José",
    "Björn",
    "Łucja",
    "Søren",
    "Иван",
    "Мария",
    "Γιώργος",
    "美咲",
    "太郎",
    "محمد",
    "Nguyễn",
    "Aoife",
];
const LAST: [&str; 12] = [
    "Lovelace",
    "Hopper",
    "Torvalds",
    "Müller",
    "García",
    "Øster",
    "Петров",
    "Παπαδόπουλος",
    "山田",
    "العلي",
    "Trần",
    "O'Brien",
];
const PLACES: [(&str, &str, &str); 8] = [
    ("US", "CA", "San Francisco"),
    ("US", "NY", "New York"),
    ("DE", "BE", "Berlin"),
    ("FR", "IDF", "Paris"),
    ("JP", "13", "東京"),
    ("GR", "I", "Αθήνα"),
    ("BR", "SP", "São Paulo"),
    ("IE", "D", "Dublin"),
];

/// The generated profile of row `i`.
pub fn generated_profile(seed: u64, i: u64) -> Profile {
    let r = mix(seed, i);
    let id = i as i64 + 1;
    let first = FIRST[(r % 16) as usize];
    let last = LAST[((r >> 8) % 12) as usize];
    let (country, state, city) = PLACES[((r >> 16) % 8) as usize];
    let roll = (r >> 24) % 1000;
    let email = match roll {
        0..=19 => None,
        20..=29 => Some(format!("customer{id}.example.com")),
        30..=34 => Some(format!("customer{id}@")),
        35..=39 => Some(format!("customer {id}@example.com")),
        40..=69 => Some(format!("  Customer{id}@Example.COM ")),
        // The address of the previous customer, spelled differently: a duplicate.
        70..=89 => Some(format!("CUSTOMER{}@example.com", id - 1)),
        _ => Some(format!("customer{id}@example.com")),
    };
    let long = (r >> 34).is_multiple_of(200);
    Profile {
        customer_id: id,
        email,
        first_name: Some(if long {
            first.repeat(12)
        } else {
            first.to_owned()
        }),
        last_name: (!(r >> 40).is_multiple_of(20)).then(|| last.to_owned()),
        country: Some(country.to_owned()),
        state: Some(state.to_owned()),
        city: Some(if (r >> 44).is_multiple_of(300) {
            format!("{city} ").repeat(8)
        } else {
            city.to_owned()
        }),
        postal_code: Some(format!("{:05}", (r >> 20) % 100_000)),
        lifetime_value: (!(r >> 50).is_multiple_of(50))
            .then(|| ((r >> 12) % 2_000_000) as f64 / 100.0),
        is_subscribed: !(r >> 60).is_multiple_of(4),
        signup_date: Some(17_000 + ((r >> 28) % 3000) as i32),
    }
}

/// The memberships of row `i`: some segments, sometimes listed twice.
fn generated_memberships(seed: u64, i: u64, share: f64, out: &mut Vec<(i64, &'static str)>) {
    let r = mix(seed ^ 0x5EED, i);
    if (r % 1_000_000) as f64 >= share * 1_000_000.0 {
        return;
    }
    let id = i as i64 + 1;
    let picks = (r >> 20) % 7 + 1; // a non-empty subset of the three segments
    for (bit, segment) in SEGMENTS.iter().enumerate() {
        if picks & (1 << bit) != 0 {
            out.push((id, segment));
            if (r >> 40).is_multiple_of(10) {
                out.push((id, segment));
            }
        }
    }
}

/// Writes `profiles/part-*.parquet` and `segment_memberships.parquet` under `out`.
pub fn write_profiles(p: &Profiles) -> anyhow::Result<()> {
    let files = p.files.max(1);
    let per_file = p.rows.div_ceil(files);
    let mut memberships = Vec::new();
    for f in 0..files {
        let start = f * per_file;
        let end = ((f + 1) * per_file).min(p.rows);
        if start >= end {
            break;
        }
        let batches = (start..end).step_by(BATCH_ROWS as usize).map(|from| {
            let to = (from + BATCH_ROWS).min(end);
            let rows: Vec<Profile> = (from..to).map(|i| generated_profile(p.seed, i)).collect();
            for i in from..to {
                generated_memberships(p.seed, i, p.member_share, &mut memberships);
            }
            profile_batch(&rows)
        });
        let path = p.out.join("profiles").join(format!("part-{f:04}.parquet"));
        write_parquet(&path, profile_schema(), batches)?;
    }
    let batches: Vec<RecordBatch> = memberships
        .chunks(BATCH_ROWS as usize)
        .map(membership_batch)
        .collect();
    write_parquet(
        &p.out.join("segment_memberships.parquet"),
        membership_schema(),
        batches,
    )
}

/// The quickstart's hand-written profiles: every kind of mess, in a few rows.
pub fn sample_profiles() -> Vec<Profile> {
    let p = |id: i64,
             email: Option<&str>,
             first: &str,
             last: &str,
             place: usize,
             ltv: f64,
             sub: bool| {
        let (country, state, city) = PLACES[place];
        Profile {
            customer_id: id,
            email: email.map(str::to_owned),
            first_name: (!first.is_empty()).then(|| first.to_owned()),
            last_name: (!last.is_empty()).then(|| last.to_owned()),
            country: Some(country.to_owned()),
            state: Some(state.to_owned()),
            city: Some(city.to_owned()),
            postal_code: Some(format!("{:05}", 10_000 + id * 7)),
            lifetime_value: Some(ltv),
            is_subscribed: sub,
            signup_date: Some(19_000 + id as i32),
        }
    };
    let mut rows = vec![
        p(
            1,
            Some("ada.lovelace@example.com"),
            "Ada",
            "Lovelace",
            0,
            12_500.0,
            true,
        ),
        p(
            2,
            Some("  Grace.Hopper@Example.COM "),
            "Grace",
            "Hopper",
            1,
            8_200.5,
            true,
        ),
        p(
            3,
            Some("grace.hopper@example.com"),
            "Grace M.",
            "Hopper",
            1,
            310.0,
            true,
        ),
        p(4, None, "Nobody", "Known", 2, 9_000.0, true),
        p(5, Some("   "), "Blank", "Email", 2, 7_000.0, true),
        p(6, Some("not-an-email"), "Bad", "Address", 3, 6_500.0, true),
        p(7, Some("missing@tld"), "No", "Tld", 3, 5_500.0, true),
        p(
            8,
            Some("zoe.muller@example.de"),
            "Zoë",
            "Müller",
            2,
            15_000.0,
            true,
        ),
        p(
            9,
            Some("ivan.petrov@example.ru"),
            "Иван",
            "Петров",
            2,
            5_200.0,
            true,
        ),
        p(
            10,
            Some("misaki@example.jp"),
            "美咲",
            "山田",
            4,
            22_000.0,
            true,
        ),
        p(
            11,
            Some("giorgos@example.gr"),
            "Γιώργος",
            "Παπαδόπουλος",
            5,
            5_001.0,
            true,
        ),
        p(
            12,
            Some("mohammed@example.com"),
            "محمد",
            "العلي",
            0,
            700.0,
            true,
        ),
        p(
            13,
            Some("joao.silva@example.br"),
            "João",
            "Silva",
            6,
            5_400.0,
            false,
        ),
        p(
            14,
            Some("aoife@example.ie"),
            "Aoife",
            "O'Brien",
            7,
            18_000.0,
            true,
        ),
        p(
            15,
            Some("AOIFE@EXAMPLE.IE"),
            "Aoife",
            "O'Brien-Kelly",
            7,
            18_100.0,
            true,
        ),
        p(
            16,
            Some("linus@example.org"),
            "Linus",
            "Torvalds",
            0,
            4_999.99,
            true,
        ),
        p(
            17,
            Some("two@@example.com"),
            "Double",
            "At",
            1,
            9_999.0,
            true,
        ),
        p(
            18,
            Some("nguyen.tran@example.vn"),
            "Nguyễn",
            "Trần",
            0,
            6_100.0,
            true,
        ),
        p(
            19,
            Some("soren@example.dk"),
            "Søren",
            "Øster",
            2,
            300.0,
            true,
        ),
        p(20, Some("lucja@example.pl"), "Łucja", "", 2, 5_050.0, true),
    ];
    // Over-long fields: truncated on a character boundary (or rejected, by policy).
    let mut long = p(21, Some("hubert@example.com"), "", "", 2, 11_000.0, true);
    long.first_name = Some("Hubert Blaine Wolfeschlegelsteinhausenbergerdorff Senior".to_owned());
    long.last_name = Some("Ñandú-".repeat(10));
    rows.push(long);
    let mut long_city = p(22, Some("ren@example.jp"), "蓮", "", 4, 7_300.0, true);
    long_city.city =
        Some("Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch-by-the-sea".to_owned());
    rows.push(long_city);
    rows
}

/// The quickstart's memberships: overlapping segments and a repeated row.
pub fn sample_memberships() -> Vec<(i64, &'static str)> {
    vec![
        (1, "vip"),
        (2, "vip"),
        (3, "vip"),
        (4, "vip"),
        (6, "vip"),
        (8, "vip"),
        (8, "vip"),
        (12, "vip"),
        (15, "vip"),
        (19, "vip"),
        (10, "newsletter"),
        (16, "newsletter"),
    ]
}

/// Writes the quickstart sample to `out/profiles.parquet` and `out/segment_memberships.parquet`.
pub fn write_sample(out: &Path) -> anyhow::Result<()> {
    write_parquet(
        &out.join("profiles.parquet"),
        profile_schema(),
        [profile_batch(&sample_profiles())],
    )?;
    write_parquet(
        &out.join("segment_memberships.parquet"),
        membership_schema(),
        [membership_batch(&sample_memberships())],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_messy() {
        let a: Vec<_> = (0..2000).map(|i| generated_profile(7, i)).collect();
        let b: Vec<_> = (0..2000).map(|i| generated_profile(7, i)).collect();
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert!(a.iter().any(|p| p.email.is_none()));
        assert!(
            a.iter()
                .any(|p| p.email.as_deref().is_some_and(|e| e.starts_with("  ")))
        );
        assert!(a.iter().any(|p| {
            p.first_name
                .as_deref()
                .is_some_and(|n| n.chars().count() > 50)
        }));
    }

    #[test]
    fn memberships_overlap_and_repeat() {
        let mut m = Vec::new();
        for i in 0..20_000 {
            generated_memberships(3, i, 0.05, &mut m);
        }
        let members: std::collections::BTreeSet<i64> = m.iter().map(|(c, _)| *c).collect();
        assert!(
            members.len() > 500 && members.len() < 1500,
            "{}",
            members.len()
        );
        assert!(
            m.len() > members.len(),
            "some customers are in several segments"
        );
        let mut sorted = m.clone();
        sorted.sort();
        sorted.dedup();
        assert!(sorted.len() < m.len(), "some memberships repeat");
    }
}
