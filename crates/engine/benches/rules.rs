//! Email normalisation and validation: emails per second on one core.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pipeline_engine::rules::{email_problem, normalize_email_into};

fn rules(c: &mut Criterion) {
    let emails: Vec<String> = (0..10_000)
        .map(|i| match i % 5 {
            0 => format!("  Customer{i}@Example.COM "),
            1 => format!("customer{i}.example.com"),
            2 => format!("first.last+{i}@sub.example.org"),
            3 => format!("ÉLODIE{i}@EXAMPLE.FR"),
            _ => format!("customer{i}@example.com"),
        })
        .collect();
    let mut group = c.benchmark_group("rules");
    group.throughput(Throughput::Elements(emails.len() as u64));
    group.bench_function("normalize_and_validate", |b| {
        let mut buf = String::new();
        b.iter(|| {
            let mut bad = 0;
            for e in &emails {
                normalize_email_into(e, &mut buf);
                bad += email_problem(&buf).is_some() as usize;
            }
            bad
        })
    });
    group.finish();
}

criterion_group!(benches, rules);
criterion_main!(benches);
