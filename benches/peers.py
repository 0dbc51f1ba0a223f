"""The same export written the way a user would without pipeline: a DuckDB query with a
Python loop around it, and a pandas/pyarrow script.

Both follow pipeline's rules so their request bodies can be compared contact by contact:
emails trimmed and lower-cased, invalid ones dropped (the same address check), each email
once (its first row in the export's order), in the export's order, at most `--cap`
contacts, SendGrid's length limits applied by truncation, null fields omitted, bodies of
at most 30,000 contacts and under 6,000,000 bytes. The export's order is pipeline's:
`--order` (a column, ascending or `DESC`, nulls last), then the segment, then the mapped
values (each ascending, nulls last).

`floor` is not an export: DuckDB reads every value of the columns the export reads (the
mapped ones and the `--order` column) for every row, with no filter, and discards them.
It is the decode floor the filter shape is measured against.

    python benches/peers.py duckdb|pandas|floor --shape membership|filter --data DIR --out DIR
        [--order "last_seen_at DESC"] [--min-ltv 19750] [--cap 100000]
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
MAPPED = ["email", "first_name", "last_name", "city", "country", "postal_code",
          "lifetime_value"]
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


def order_of(args):
    """The export's order key: its column and whether it descends."""
    column, _, direction = args.order.partition(" ")
    return column, direction.strip().upper() == "DESC"


def run_duckdb(args):
    import duckdb

    key, descending = order_of(args)
    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    profiles = os.path.join(args.data, "profiles", "*.parquet")
    members = os.path.join(args.data, "segment_memberships.parquet")
    if args.shape == "membership":
        names = ", ".join(f"'{s}'" for s in SEGMENTS)
        source = (f"SELECT 0 AS seg, p.* FROM read_parquet('{members}') m "
                  f"JOIN read_parquet('{profiles}') p USING (customer_id) "
                  f"WHERE m.segment_name IN ({names})")
    else:
        source = (f"SELECT 0 AS seg, * FROM read_parquet('{profiles}') "
                  f"WHERE lifetime_value >= {args.min_ltv} AND is_subscribed")
    texts = ", ".join(f"left({c}, {n}) AS {c}" for c, n in TEXT_FIELDS)
    order = ", ".join([f"__key {'DESC' if descending else 'ASC'} NULLS LAST", "seg"]
                      + [f"{c} NULLS LAST" for c in MAPPED])
    sql = f"""
        WITH rows AS (
            SELECT seg, {key} AS __key, lower(trim(email)) AS email, {texts},
                   postal_code, lifetime_value
            FROM ({source})
        ), valid AS (
            SELECT * FROM rows
            WHERE email IS NOT NULL AND length(email) <= 254
              AND length(split_part(email, '@', 1)) <= 64
              AND length(split_part(email, '@', 2)) <= 253
              AND regexp_full_match(email, '{EMAIL_RE.replace("'", "''")}')
        ), ranked AS (
            SELECT *, row_number() OVER (PARTITION BY email ORDER BY {order}) AS rn
            FROM valid
        )
        SELECT {", ".join(MAPPED)}
        FROM ranked WHERE rn = 1 ORDER BY {order} LIMIT {args.cap}
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

    key, descending = order_of(args)
    columns = list(dict.fromkeys(["customer_id", key] + MAPPED))
    profiles = pd.read_parquet(os.path.join(args.data, "profiles"), columns=columns + (
        [] if args.shape == "membership" else ["is_subscribed"]))
    if args.shape == "membership":
        members = pd.read_parquet(os.path.join(args.data, "segment_memberships.parquet"))
        ids = members.loc[members.segment_name.isin(SEGMENTS), ["customer_id"]]
        rows = ids.assign(seg=0).merge(profiles, on="customer_id")
    else:
        rows = profiles[(profiles.lifetime_value >= args.min_ltv) & profiles.is_subscribed]
        rows = rows.assign(seg=0)
    email = rows.email.str.strip().str.lower()
    local = email.str.split("@", n=1).str[0]
    domain = email.str.split("@", n=1).str[1]
    valid = (email.notna() & (email.str.len() <= 254) & (local.str.len() <= 64)
             & (domain.str.len() <= 253) & email.str.fullmatch(EMAIL_RE).fillna(False)
             .astype(bool))
    rows = rows.assign(email=email, __key=rows[key])[valid]
    for c, n in TEXT_FIELDS:
        rows[c] = rows[c].str.slice(0, n)
    by = ["__key", "seg"] + MAPPED
    rows = rows.sort_values(by, ascending=[not descending] + [True] * (len(by) - 1),
                            na_position="last", kind="stable")
    rows = rows.drop_duplicates("email", keep="first").head(args.cap)
    out = rows[["email", "first_name", "last_name", "city", "country", "postal_code",
                "lifetime_value"]].astype(object).where(rows.notna(), None)
    return write_bodies(out.itertuples(index=False, name=None), args.out)


def run_floor(args):
    """Reads every value of the export's columns for every row; writes no bodies."""
    import duckdb

    key, _ = order_of(args)
    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    profiles = os.path.join(args.data, "profiles", "*.parquet")
    columns = ", ".join(f"max({c})::VARCHAR" for c in dict.fromkeys(MAPPED + [key]))
    con.execute(f"SELECT count(*), {columns} FROM read_parquet('{profiles}')").fetchall()
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("peer", choices=["duckdb", "pandas", "floor"])
    p.add_argument("--shape", choices=["membership", "filter"], required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cap", type=int, default=100_000)
    p.add_argument("--order", default="customer_id")
    p.add_argument("--min-ltv", type=float, default=19750.0)
    args = p.parse_args()
    files = {"duckdb": run_duckdb, "pandas": run_pandas, "floor": run_floor}[args.peer](args)
    print(files)


if __name__ == "__main__":
    sys.exit(main())
