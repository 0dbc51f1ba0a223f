"""The same export written the way a user would without pipeline: a DuckDB query with a
Python loop around it, and a pandas/pyarrow script.

Both follow pipeline's rules so their request bodies can be compared contact by contact:
emails trimmed and lower-cased, invalid ones dropped (the same address check), each email
once (the first row by customer_id, then segment), ordered by customer_id, at most
`--cap` contacts, SendGrid's length limits applied by truncation, null fields omitted,
bodies of at most 30,000 contacts and under 6,000,000 bytes.

    python benches/peers.py duckdb|pandas --shape membership|filter --data DIR --out DIR
"""

import argparse
import json
import os
import sys

LIST_ID = "0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11"
SEGMENTS = ["vip", "newsletter", "winback"]
# pipeline's address check (crates/engine/src/rules.rs), after trimming and lower-casing.
LOCAL = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
TOP = r"([a-z]{2,63}|xn--[a-z0-9-]{0,58}[a-z0-9])"
EMAIL_RE = f"{LOCAL}@({LABEL}\\.)+{TOP}"
# Reserved text fields and SendGrid's limits; lifetime_value is a custom field.
TEXT_FIELDS = [("first_name", 50), ("last_name", 50), ("city", 60), ("country", 50)]
COLUMNS = ["customer_id", "email", "first_name", "last_name", "city", "country",
           "postal_code", "lifetime_value"]
MIN_LTV = 19750.0
MAX_CONTACTS = 30_000
MAX_BYTES = 6_000_000


def write_bodies(rows, out_dir):
    """rows: iterable of (email, first_name, last_name, city, country, postal_code, ltv)."""
    os.makedirs(out_dir, exist_ok=True)
    prefix = ('{"list_ids":["%s"],"contacts":[' % LIST_ID).encode()
    body, count, files = bytearray(prefix), 0, 0

    def flush():
        nonlocal body, count, files
        files += 1
        with open(os.path.join(out_dir, f"request-{files:06}.json"), "wb") as f:
            f.write(bytes(body) + b"]}")
        body, count = bytearray(prefix), 0

    names = ["email", "first_name", "last_name", "city", "country", "postal_code"]
    for row in rows:
        contact = {k: v for k, v in zip(names, row[:6]) if v is not None}
        ltv = row[6]
        if ltv is not None and ltv == ltv:
            contact["custom_fields"] = {"lifetime_value": ltv}
        encoded = json.dumps(contact, ensure_ascii=False, separators=(",", ":")).encode()
        if count == MAX_CONTACTS or len(body) + len(encoded) + 3 >= MAX_BYTES:
            flush()
        if count:
            body += b","
        body += encoded
        count += 1
    if count:
        flush()
    return files


def run_duckdb(args):
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    profiles = os.path.join(args.data, "profiles", "*.parquet")
    members = os.path.join(args.data, "segment_memberships.parquet")
    if args.shape == "membership":
        parts = " UNION ALL ".join(
            f"SELECT {i} AS seg, customer_id FROM read_parquet('{members}') "
            f"WHERE segment_name = '{s}'"
            for i, s in enumerate(SEGMENTS)
        )
        source = (f"SELECT m.seg, p.* FROM ({parts}) m "
                  f"JOIN read_parquet('{profiles}') p USING (customer_id)")
    else:
        source = (f"SELECT 0 AS seg, * FROM read_parquet('{profiles}') "
                  f"WHERE lifetime_value >= {MIN_LTV} AND is_subscribed")
    texts = ", ".join(f"left({c}, {n}) AS {c}" for c, n in TEXT_FIELDS)
    sql = f"""
        WITH rows AS (
            SELECT seg, customer_id, lower(trim(email)) AS email, first_name, last_name,
                   city, country, postal_code, lifetime_value
            FROM ({source})
        ), valid AS (
            SELECT * FROM rows
            WHERE email IS NOT NULL AND length(email) <= 254
              AND length(split_part(email, '@', 1)) <= 64
              AND length(split_part(email, '@', 2)) <= 253
              AND regexp_full_match(email, '{EMAIL_RE.replace("'", "''")}')
        ), ranked AS (
            SELECT *, row_number() OVER (PARTITION BY email ORDER BY customer_id, seg) AS rn
            FROM valid
        )
        SELECT email, {texts}, postal_code, lifetime_value
        FROM ranked WHERE rn = 1 ORDER BY customer_id, seg LIMIT {args.cap}
    """
    cursor = con.execute(sql)
    rows = []
    while True:
        chunk = cursor.fetchmany(10_000)
        if not chunk:
            break
        rows.extend(chunk)
    return write_bodies(rows, args.out)


def run_pandas(args):
    import pandas as pd

    profiles = pd.read_parquet(os.path.join(args.data, "profiles"), columns=COLUMNS + (
        [] if args.shape == "membership" else ["is_subscribed"]))
    if args.shape == "membership":
        members = pd.read_parquet(os.path.join(args.data, "segment_memberships.parquet"))
        parts = []
        for i, s in enumerate(SEGMENTS):
            ids = members.loc[members.segment_name == s, ["customer_id"]]
            parts.append(ids.assign(seg=i).merge(profiles, on="customer_id"))
        rows = pd.concat(parts, ignore_index=True)
    else:
        rows = profiles[(profiles.lifetime_value >= MIN_LTV) & profiles.is_subscribed]
        rows = rows.assign(seg=0)
    email = rows.email.str.strip().str.lower()
    local = email.str.split("@", n=1).str[0]
    domain = email.str.split("@", n=1).str[1]
    valid = (email.notna() & (email.str.len() <= 254) & (local.str.len() <= 64)
             & (domain.str.len() <= 253) & email.str.fullmatch(EMAIL_RE).fillna(False)
             .astype(bool))
    rows = rows.assign(email=email)[valid]
    rows = rows.sort_values(["customer_id", "seg"], kind="stable")
    rows = rows.drop_duplicates("email", keep="first").head(args.cap)
    for c, n in TEXT_FIELDS:
        rows[c] = rows[c].str.slice(0, n)
    out = rows[["email", "first_name", "last_name", "city", "country", "postal_code",
                "lifetime_value"]].astype(object).where(rows.notna(), None)
    return write_bodies(out.itertuples(index=False, name=None), args.out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("peer", choices=["duckdb", "pandas"])
    p.add_argument("--shape", choices=["membership", "filter"], required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cap", type=int, default=100_000)
    args = p.parse_args()
    files = run_duckdb(args) if args.peer == "duckdb" else run_pandas(args)
    print(files)


if __name__ == "__main__":
    sys.exit(main())
