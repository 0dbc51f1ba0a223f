//! One export as one DataFusion query: the segments' members projected onto SendGrid
//! fields, normalised and checked against SendGrid's rules. The query itself does not
//! sort: its rows stream once into the sorts of `select`, which order them by the export's
//! order under the session's memory pool.
//!
//! The query's columns are the [`META_COLUMNS`], one column per mapped field, then one per
//! `order_by` expression.

use std::collections::BTreeMap;

use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::DFParser;
use pipeline_sink::{ContactField, FieldKind};
use pipeline_spec::{Export, FieldLengthPolicy, Identifier, without_comments};

use crate::rules::{MAX_ALTERNATE_EMAILS, field_max_chars};
use crate::segments::{clean_sql_error, query_only};

/// Columns before the contact fields: segment index, rejects-file key, the export's
/// identifier as written, reject reason, reject detail, truncated flag.
pub const META_COLUMNS: usize = 6;

/// Where each meta column is, as `build_sql` writes them.
pub(crate) mod meta {
    pub const SEGMENT: usize = 0;
    pub const KEY: usize = 1;
    pub const RAW_EMAIL: usize = 2;
    pub const REASON: usize = 3;
    pub const DETAIL: usize = 4;
    pub const TRUNCATED: usize = 5;
}

/// A planned export.
#[derive(Debug, Clone)]
pub struct ExportQuery {
    /// The export's name.
    pub export: String,
    /// The SQL that selects and checks the members of every segment, one `UNION ALL`; the
    /// types of its columns are the selection's.
    pub sql: String,
    /// The same query for each segment on its own, by index: a run plans and runs them in
    /// turn (`turns.rs`).
    pub segment_sql: Vec<String>,
    /// The contact fields, in column order after the meta columns; the export's
    /// identifier (`key`) first.
    pub fields: Vec<ContactField>,
    /// The identifier that keys the contacts: rows are deduplicated by it.
    pub key: Identifier,
    /// The export's segments, by index.
    pub segments: Vec<String>,
    /// SendGrid's type for each custom field: `Number`, `Date` or `Text`.
    pub custom_field_types: BTreeMap<String, &'static str>,
    /// Whether each `order_by` expression sorts descending; its column follows the fields.
    pub order_descending: Vec<bool>,
    /// One query per segment (its rows alone) and per segment and mapped field, run only
    /// when the export's query fails, to name the segment and field whose values fail.
    pub probes: Vec<Probe>,
}

/// The values of one mapped field in one segment, on their own.
#[derive(Debug, Clone)]
pub struct Probe {
    pub segment: String,
    /// `mapping.<field>`, or where else in the segment the probe looks.
    pub field: String,
    pub sql: String,
}

/// How a mapped value is made into a SendGrid value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Email,
    /// An identifier other than the email: trimmed text, blank as none.
    Identifier,
    Text,
    EmailList,
    Integer,
    Float,
    Date(DateForm),
}

impl Shape {
    /// How SendGrid receives a value of this shape, for messages.
    fn sent_as(self) -> &'static str {
        match self {
            Shape::Email => "an email",
            Shape::Identifier => "an identifier",
            Shape::Text => "text",
            Shape::EmailList => "a list of emails",
            Shape::Integer => "a whole number",
            Shape::Float => "a number",
            Shape::Date(DateForm::Day) => "a date",
            Shape::Date(DateForm::Naive) => "a time without a zone",
            Shape::Date(DateForm::Zoned) => "a time with a zone",
        }
    }

    /// The shape that fills a field from values of both shapes, when there is one: whole
    /// numbers in one segment and decimals in another are all sent as numbers.
    fn joined(self, other: Shape) -> Option<Shape> {
        match (self, other) {
            (a, b) if a == b => Some(a),
            (Shape::Integer, Shape::Float) | (Shape::Float, Shape::Integer) => Some(Shape::Float),
            _ => None,
        }
    }
}

/// What a date custom field is filled from: each is sent as an ISO 8601 timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateForm {
    /// A date: midnight UTC that day.
    Day,
    /// A timestamp without a zone, taken as UTC.
    Naive,
    /// A timestamp with a zone, sent with its offset.
    Zoned,
}

struct Mapped {
    field: ContactField,
    written: String,
    shape: Shape,
}

/// Plans export `index` of the file against the segments' schemas; lists every problem.
pub(crate) async fn plan_export(
    ctx: &SessionContext,
    index: usize,
    export: &Export,
    schemas: &BTreeMap<String, SchemaRef>,
) -> Result<ExportQuery, Vec<String>> {
    let at = |what: &str| format!("exports[{index}] (`{}`) {what}", export.name);
    let mut problems = Vec::new();
    let mut mapped: Vec<Mapped> = export
        .mapping
        .reserved_keyed(export.identifier)
        .into_iter()
        .map(|(name, written)| Mapped {
            field: ContactField {
                name: name.into(),
                kind: FieldKind::Reserved,
            },
            written: written.to_owned(),
            shape: Shape::Text,
        })
        .chain(
            export
                .mapping
                .custom_fields
                .iter()
                .map(|(name, written)| Mapped {
                    field: ContactField {
                        name: name.clone(),
                        kind: FieldKind::Custom,
                    },
                    written: written.clone(),
                    shape: Shape::Text,
                }),
        )
        .collect();

    // The shape of each field follows its type; the type must agree with the field in
    // every segment.
    let mut shapes: Vec<Option<(Shape, String, DataType)>> = vec![None; mapped.len()];
    let mut order: Vec<(String, bool)> = Vec::new();
    let mut selects = Vec::new();
    // (index in `selects`, field) of the values that are a bare NULL.
    let mut untyped: Vec<(usize, usize)> = Vec::new();
    for (seg_index, segment) in export.segments.iter().enumerate() {
        let Some(schema) = schemas.get(segment) else {
            continue; // The segment failed to plan; that problem is already reported.
        };
        let mut exprs = Vec::with_capacity(mapped.len());
        for (i, m) in mapped.iter().enumerate() {
            let what = format!("mapping.{}", m.field.qualified_name());
            let resolved = resolve(&m.written, schema);
            let typed = expression_type(ctx, segment, &resolved, MAPPING_VOLATILE).await;
            match typed.map(|t| decoded(resolved, t)) {
                // A bare NULL (a segment without the column) fits the field whatever the
                // other segments fill it with; it takes their type below.
                Ok((expr, DataType::Null)) => {
                    untyped.push((selects.len(), i));
                    exprs.push(expr);
                }
                Ok((expr, data_type)) => match shape_of(&m.field, &data_type) {
                    Ok(shape)
                        if shapes[i]
                            .as_ref()
                            .is_some_and(|(first, _, _)| first.joined(shape).is_none()) =>
                    {
                        let (first, first_segment, first_type) =
                            &shapes[i].as_ref().expect("checked");
                        problems.push(format!(
                            "{}: `{}` is {data_type} ({}) in segment `{segment}` but {first_type} ({}) in \
                             segment `{first_segment}`; map values of one type in every segment of the \
                             export (a CAST in one segment's SQL, say)",
                            at(&what),
                            m.written,
                            shape.sent_as(),
                            first.sent_as(),
                        ));
                    }
                    Ok(shape) => {
                        exprs.push(if matches!(shape, Shape::Text) && data_type.is_floating() {
                            finite(&expr)
                        } else {
                            expr
                        });
                        let first = shapes[i].get_or_insert((shape, segment.clone(), data_type));
                        first.0 = first.0.joined(shape).expect("checked");
                    }
                    Err(message) => problems.push(format!(
                        "{}: in segment `{segment}`, `{}` is {data_type}; {message}{}",
                        at(&what),
                        m.written,
                        type_hint(&data_type, &m.written)
                    )),
                },
                Err(message) => problems.push(format!(
                    "{}: {}",
                    at(&what),
                    explain_expression_error(&m.written, segment, schema, &message)
                )),
            }
        }
        let mut order_exprs = Vec::new();
        for (j, written) in export.order_by.iter().enumerate() {
            // A comment would hide the direction before it (`seen_at DESC -- newest`).
            let uncommented = without_comments(written);
            let (expr_text, descending) = match split_direction(&uncommented) {
                Ok(split) => split,
                Err(message) => {
                    if seg_index == 0 {
                        problems.push(format!("{}: {message}", at(&format!("order_by[{j}]"))));
                    }
                    continue;
                }
            };
            let expr = resolve(expr_text, schema);
            match expression_type(ctx, segment, &expr, ORDER_VOLATILE).await {
                // The key of a row is its `order_by` values as text.
                // Bytes would be cast to text, which fails on the first value that is not
                // UTF-8.
                Ok(t) if !arrow::compute::can_cast_types(&t, &DataType::Utf8) || is_bytes(&t) => {
                    problems.push(format!(
                        "{}: in segment `{segment}`, `{expr_text}` is {t}, which rows cannot be ordered by: order by text, numbers or dates{}",
                        at(&format!("order_by[{j}]")),
                        type_hint(&t, expr_text)
                    ))
                }
                Ok(_) => order_exprs.push(expr),
                Err(message) => problems.push(format!(
                    "{}: {}{}",
                    at(&format!("order_by[{j}]")),
                    explain_expression_error(expr_text, segment, schema, &message),
                    if written.contains(',') {
                        "; several expressions go in a list, one per item (`order_by: [signup_date DESC, customer_id]`)"
                    } else {
                        ""
                    }
                )),
            }
            if seg_index == 0 {
                order.push((format!("__o{j}"), descending));
            }
        }
        selects.push((seg_index, segment.clone(), exprs, order_exprs));
    }
    if !problems.is_empty() {
        return Err(said_once(problems));
    }
    for (select, field) in untyped {
        match &shapes[field] {
            // A list's NULL is left to the union's coercion.
            Some((Shape::EmailList, _, _)) | None => {}
            Some((_, _, data_type)) => {
                selects[select].2[field] =
                    format!("arrow_cast(NULL, {})", quote_str(&data_type.to_string()));
            }
        }
    }
    for (m, shape) in mapped.iter_mut().zip(&shapes) {
        m.shape = match shape {
            Some((shape, _, _)) => *shape,
            // NULL in every segment: the field's own shape for no value.
            None => shape_of(&m.field, &DataType::Null).unwrap_or(Shape::Text),
        };
    }
    Ok(build_sql(export, &mapped, &order, selects))
}

/// A value that names a column is that column, exactly as written; anything else is SQL,
/// ended by a line break when it may hold a `--` comment, so that the comment does not
/// run on into the query the expression is put in.
fn resolve(written: &str, schema: &SchemaRef) -> String {
    if schema.fields().iter().any(|f| f.name() == written) {
        quote_ident(written)
    } else if written.contains("--") {
        format!("{written}\n")
    } else {
        written.to_owned()
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// An `order_by` entry's expression and whether it sorts descending. Rows without a
/// value come last either way, so `NULLS LAST` may be written; `NULLS FIRST` is refused
/// with the entry that gives it.
fn split_direction(written: &str) -> Result<(&str, bool), String> {
    let mut rest = written.trim();
    if let Some(before) = strip_last_word(rest, "last").and_then(|r| strip_last_word(r, "nulls")) {
        rest = before;
    } else if let Some(before) =
        strip_last_word(rest, "first").and_then(|r| strip_last_word(r, "nulls"))
    {
        let expr = strip_last_word(before, "desc")
            .or_else(|| strip_last_word(before, "asc"))
            .unwrap_or(before);
        return Err(format!(
            "`{written}`: rows without a value always come last in `order_by`; to put them first, write `{expr} IS NOT NULL` before it (false sorts first)"
        ));
    }
    if let Some(expr) = strip_last_word(rest, "desc") {
        Ok((expr, true))
    } else if let Some(expr) = strip_last_word(rest, "asc") {
        Ok((expr, false))
    } else {
        Ok((rest, false))
    }
}

/// `text` without its last word when that word is `word` (any case) after white space.
fn strip_last_word<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let cut = text.len().checked_sub(word.len())?;
    let (before, last) = (text.get(..cut)?, text.get(cut..)?);
    (last.eq_ignore_ascii_case(word) && before.ends_with(char::is_whitespace))
        .then(|| before.trim_end())
}

/// Why a mapping may not take another value each time it runs (`random()`, `uuid()`).
const MAPPING_VOLATILE: &str = "every run would find every contact changed and send it again, with new values (and a row keyed by it would be a new contact each run); derive the value from the row instead (`md5(email)` is random-looking and stays the same)";

/// Why `order_by` may not take another value each time it runs.
const ORDER_VOLATILE: &str = "every run would keep other contacts under the cap and send them; derive the order from the row instead (`md5(email)` is a random order that stays the same from run to run)";

/// The type of `expr` over `segment`'s rows; `volatile` says why the expression may not
/// take another value each time it runs.
async fn expression_type(
    ctx: &SessionContext,
    segment: &str,
    expr: &str,
    volatile: &str,
) -> Result<DataType, String> {
    crate::segments::check_expression_size(expr)?;
    // Parsed alone first: inside the query below, trailing text would be read as more
    // SQL (`email ||` as `email || AS`).
    let parsed = DFParser::parse_sql_into_expr(expr)
        .map_err(|e| format!("SQL syntax error: {}", clean_sql_error(&e.to_string())))?;
    if let Some(alias) = parsed.alias {
        return Err(format!(
            "names itself `{alias}`, but a field is named by its key in the mapping: write the expression without `AS`"
        ));
    }
    let sql = format!("SELECT {expr} AS v FROM {}", quote_ident(segment));
    let df = ctx
        .sql_with_options(&sql, query_only())
        .await
        .map_err(|e| clean_sql_error(&e.to_string()))?;
    if df.schema().fields().len() != 1 {
        return Err("must be one expression".into());
    }
    // A mapping fills one contact from its own row; an aggregate or a window would pass
    // here alone and fail beside the other fields at run time. Only the nodes above the
    // segment count: its own SQL (inlined under its alias) may rank or group.
    let mut per_row = true;
    let _ = df.logical_plan().apply(|node| {
        Ok(match node {
            LogicalPlan::Aggregate(_) | LogicalPlan::Window(_) => {
                per_row = false;
                TreeNodeRecursion::Stop
            }
            LogicalPlan::SubqueryAlias(_) => TreeNodeRecursion::Jump,
            _ => TreeNodeRecursion::Continue,
        })
    });
    if !per_row {
        return Err(
            "is an aggregate or window expression (sum, count, row_number() OVER, ...), but a mapping fills each contact from its own row: compute it in the segment's SQL and map the column"
                .into(),
        );
    }
    if let LogicalPlan::Projection(projection) = df.logical_plan() {
        if projection.expr.iter().any(Expr::is_volatile) {
            return Err(format!(
                "takes another value each time it runs (as `random()` and `uuid()` do): {volatile}"
            ));
        }
        if let Some(advice) = projection
            .expr
            .iter()
            .find_map(crate::segments::compared_with_null)
        {
            return Err(format!("compares with NULL: {advice}"));
        }
    }
    Ok(df.schema().field(0).data_type().clone())
}

fn explain_expression_error(
    written: &str,
    segment: &str,
    schema: &SchemaRef,
    message: &str,
) -> String {
    let is_name = !written.is_empty() && written.chars().all(|c| c.is_alphanumeric() || c == '_');
    // `first name` for a column `First Name`: a name, in the wrong case, not SQL.
    let is_name = is_name
        || schema
            .fields()
            .iter()
            .any(|f| f.name().eq_ignore_ascii_case(written));
    if [
        "is an aggregate",
        "takes another value",
        "compares with NULL",
        "names itself",
    ]
    .iter()
    .any(|said| message.starts_with(said))
    {
        format!("`{written}` {message}")
    } else if let Some(why) = message.strip_prefix("SQL syntax error: ") {
        // Not the segment's doing: said once for all of them.
        format!("`{written}` is not valid SQL: {why}")
    } else if is_name {
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let meant = pipeline_spec::did_you_mean(written, columns.iter().copied());
        // A wide table's names would bury the message: the first 40 are enough to see.
        let shown = columns.len().min(40);
        let more = match columns.len() - shown {
            0 => String::new(),
            n => format!(", and {n} more"),
        };
        format!(
            "column `{written}` is not in segment `{segment}`{meant}; its columns are: {}{more}",
            columns[..shown].join(", ")
        )
    } else {
        let message = crate::segments::quote_advice(message.to_owned(), written);
        format!("`{written}` is not a valid expression over segment `{segment}`: {message}")
    }
}

/// Each problem said once: a problem that names no segment is the same in every segment,
/// and problems that differ only in the segment they name (a column of the wrong type in
/// every segment) are one problem, said naming each of those segments.
fn said_once(problems: Vec<String>) -> Vec<String> {
    const NAMED: &str = "segment `";
    // (the problem with its segment's name taken out, the names), in the order first said.
    let mut said: Vec<((String, String), Vec<String>)> = Vec::new();
    for problem in problems {
        let named = problem.find(NAMED).and_then(|start| {
            let name_at = start + NAMED.len();
            let end = name_at + problem[name_at..].find('`')?;
            Some((start, name_at, end))
        });
        let (key, name) = match named {
            Some((start, name_at, end)) => (
                (problem[..start].to_owned(), problem[end + 1..].to_owned()),
                Some(problem[name_at..end].to_owned()),
            ),
            None => ((problem, String::new()), None),
        };
        match said.iter_mut().find(|(k, _)| *k == key) {
            Some((_, names)) => names.extend(name.filter(|n| !names.contains(n))),
            None => said.push((key, name.into_iter().collect())),
        }
    }
    said.into_iter()
        .map(|((before, after), names)| match names.as_slice() {
            [] => before,
            [one] => format!("{before}{NAMED}{one}`{after}"),
            [most @ .., last] => {
                let most: Vec<String> = most.iter().map(|n| format!("`{n}`")).collect();
                format!("{before}segments {} and `{last}`{after}", most.join(", "))
            }
        })
        .collect()
}

/// A mapped expression as its field's value is computed from, and the type that decides
/// its shape: a dictionary-encoded value (as pandas and Polars write categoricals) is read
/// as its values, a narrow float through its text.
fn decoded(expr: String, data_type: DataType) -> (String, DataType) {
    match data_type {
        DataType::Dictionary(_, value) => (format!("arrow_cast({expr}, '{value}')"), *value),
        // A narrower float sent as a double would show its binary expansion (1.1 as
        // 1.100000023841858); through its own shortest text it is the number the table
        // shows. Its type stays the column's, for messages.
        DataType::Float16 | DataType::Float32 => (
            format!("CAST(CAST({expr} AS VARCHAR) AS DOUBLE)"),
            data_type,
        ),
        other => (expr, other),
    }
}

/// A float's value, null where it is NaN or infinite: as text it would be `NaN` or `inf`
/// (the encoder omits such numbers from number fields the same way). `v - v` is NaN for
/// exactly those and 0 for every other number.
fn finite(expr: &str) -> String {
    format!("CASE WHEN isnan({expr} - {expr}) THEN NULL ELSE {expr} END")
}

/// What to do when a mapped value (`written`) is of a type no field takes: bytes are most
/// often text a writer stored without its string annotation; a list can be joined into
/// text, and a struct's fields mapped one by one.
fn type_hint(t: &DataType, written: &str) -> String {
    match t {
        t if is_bytes(t) => " (if the column is text that Impala or Hive stored as bytes, set `binary_as_string: true` on its source)".into(),
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => format!(
            " (to send a list as one text, join it: `array_to_string({written}, ', ')`)"
        ),
        DataType::Struct(fields) if !fields.is_empty() => format!(
            " (one of its fields is `{written}['{}']`)",
            fields[0].name()
        ),
        DataType::Map(..) => format!(" (a key's value is `{written}['key']`)"),
        // Iceberg and Trino store a UUID so, and pyarrow its `uuid()` type.
        DataType::FixedSizeBinary(16) => format!(
            " (a UUID reads as its usual text with `regexp_replace(encode({written}, 'hex'), '(.{{8}})(.{{4}})(.{{4}})(.{{4}})(.{{12}})', '\\1-\\2-\\3-\\4-\\5')`; in double quotes YAML would read the backslashes as escapes)"
        ),
        DataType::Duration(unit) => {
            let unit = match unit {
                TimeUnit::Second => "seconds",
                TimeUnit::Millisecond => "milliseconds",
                TimeUnit::Microsecond => "microseconds",
                TimeUnit::Nanosecond => "nanoseconds",
            };
            format!(" (to send it as a number of {unit}: `CAST({written} AS BIGINT)`)")
        }
        DataType::Time32(_) | DataType::Time64(_) => {
            format!(" (to send it as text such as `09:30:00`: `CAST({written} AS VARCHAR)`)")
        }
        _ => String::new(),
    }
}

/// Whether values of `t` are bytes (what a Parquet BINARY column without the string
/// annotation reads as).
pub(crate) fn is_bytes(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// How a value of `data_type` fills `field`, or why it cannot.
fn shape_of(field: &ContactField, data_type: &DataType) -> Result<Shape, String> {
    use DataType::*;
    let scalar_text = |t: &DataType| {
        is_string(t)
            || t.is_numeric()
            || matches!(t, Boolean | Date32 | Date64 | Timestamp(..) | Null)
    };
    match (field.kind, field.name.as_str()) {
        (FieldKind::Reserved, "email") if is_string(data_type) || *data_type == Null => {
            Ok(Shape::Email)
        }
        (FieldKind::Reserved, "email") => Err(
            "the email must be text: map the email column, or convert with CAST(... AS VARCHAR)"
                .into(),
        ),
        (FieldKind::Reserved, name) if Identifier::named(name).is_some() => {
            if data_type.is_floating() {
                Err(format!(
                    "{name} names a contact by its text, and a float's text (`12345.0`) names another one than its whole number's (`12345`): map CAST(... AS BIGINT) if the values are whole numbers (pandas writes whole numbers with gaps as floats), or CAST(... AS VARCHAR) to send the float's text"
                ))
            } else if scalar_text(data_type) {
                Ok(Shape::Identifier)
            } else {
                Err(format!("{name} must be text or a number"))
            }
        }
        (FieldKind::Reserved, "alternate_emails") => match data_type {
            List(f) | LargeList(f) if is_string(f.data_type()) || *f.data_type() == Null => {
                Ok(Shape::EmailList)
            }
            _ => Err("alternate_emails must be a list of text values".into()),
        },
        (FieldKind::Reserved, "postal_code") if data_type.is_floating() => Err(
            "postal_code would be sent as a float's text (`2134.0`): map CAST(... AS BIGINT) if the values are whole numbers (pandas writes whole numbers with gaps as floats, and drops leading zeros: `lpad(CAST(CAST(... AS BIGINT) AS VARCHAR), 5, '0')` pads five-digit ZIP codes again), or CAST(... AS VARCHAR) to send the float's text"
                .into(),
        ),
        (FieldKind::Reserved, _) if scalar_text(data_type) => Ok(Shape::Text),
        (FieldKind::Reserved, name) => Err(format!("{name} must be text, a number or a date")),
        (FieldKind::Custom, _) => match data_type {
            Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => Ok(Shape::Integer),
            Float16 | Float32 | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..)
            | Decimal256(..) => Ok(Shape::Float),
            Date32 | Date64 => Ok(Shape::Date(DateForm::Day)),
            Timestamp(_, None) => Ok(Shape::Date(DateForm::Naive)),
            Timestamp(_, Some(_)) => Ok(Shape::Date(DateForm::Zoned)),
            t if is_string(t) || matches!(t, Boolean | Null) => Ok(Shape::Text),
            _ => Err("a custom field takes text, a number or a date".into()),
        },
    }
}

/// The SendGrid value of a mapped expression, before length rules.
fn value_sql(expr: &str, shape: Shape) -> String {
    match shape {
        Shape::Email => format!("sg_email({expr})"),
        Shape::Identifier => format!("NULLIF(trim(CAST({expr} AS VARCHAR)), '')"),
        Shape::Text => format!("CAST({expr} AS VARCHAR)"),
        Shape::EmailList => expr.to_string(),
        Shape::Integer => format!("CAST({expr} AS BIGINT)"),
        Shape::Float => format!("CAST({expr} AS DOUBLE)"),
        // ISO 8601, as recorded traffic of the live API shows Date fields taking (its
        // MM/DD/YYYY is documented for CSV imports only); see docs/sendgrid.md. The form
        // (`DateForm`) follows from the type; `sg_date` writes each.
        Shape::Date(_) => format!("sg_date({expr})"),
    }
}

fn build_sql(
    export: &Export,
    mapped: &[Mapped],
    order: &[(String, bool)],
    selects: Vec<(usize, String, Vec<String>, Vec<String>)>,
) -> ExportQuery {
    let mut members = Vec::new();
    let mut probes = Vec::new();
    for (seg_index, segment, exprs, order_exprs) in &selects {
        let key = if order_exprs.is_empty() {
            format!("CAST({} AS VARCHAR)", exprs[0])
        } else {
            let parts: Vec<String> = order_exprs
                .iter()
                .map(|e| format!("CAST({e} AS VARCHAR)"))
                .collect();
            format!("concat_ws('|', {})", parts.join(", "))
        };
        let mut cols = vec![
            format!("CAST({seg_index} AS BIGINT) AS __seg"),
            format!("{key} AS __key"),
            format!("CAST({} AS VARCHAR) AS __raw_email", exprs[0]),
        ];
        for (j, e) in order_exprs.iter().enumerate() {
            cols.push(format!("{e} AS __o{j}"));
        }
        // The segment's own rows first: its filter or joins may fail before any field.
        probes.push(Probe {
            segment: segment.clone(),
            field: "in its own SQL, before any mapped field".to_owned(),
            sql: format!("SELECT count(*) FROM {}", quote_ident(segment)),
        });
        for (i, (m, e)) in mapped.iter().zip(exprs).enumerate() {
            cols.push(format!("{} AS __f{i}", value_sql(e, m.shape)));
            probes.push(Probe {
                segment: segment.clone(),
                field: format!("mapping.{}", m.field.qualified_name()),
                sql: format!(
                    "SELECT {} FROM {}",
                    value_sql(e, m.shape),
                    quote_ident(segment)
                ),
            });
        }
        members.push(format!(
            "SELECT {} FROM {}",
            cols.join(", "),
            quote_ident(segment)
        ));
    }

    // Identifier rules: each check is a reject reason code or NULL. The key must be there
    // and valid; another identifier may be missing, but must be valid when it is there.
    let mut checks: Vec<String> = Vec::new();
    // Length rules per field: (condition for "too long", the truncated value).
    let mut too_long: Vec<(String, String)> = Vec::new(); // (condition, field name)
    let mut finals: Vec<String> = Vec::new();
    // What is wrong with the email, when it rejects the row, is the reject's detail.
    let mut email_column: Option<String> = None;
    for (i, m) in mapped.iter().enumerate() {
        let col = format!("__f{i}");
        let is_key = i == 0;
        let limit = match (m.field.kind, m.shape) {
            (FieldKind::Reserved, Shape::Text | Shape::Identifier) => {
                field_max_chars(&m.field.name)
            }
            _ => None,
        };
        match (m.shape, limit) {
            (Shape::Email, _) if is_key => {
                checks.push(format!("sg_email_problem({col})"));
                email_column = Some(col.clone());
                finals.push(col.clone());
            }
            (Shape::Email, _) => {
                checks.push(format!(
                    "CASE WHEN {col} <> '' THEN sg_email_problem({col}) END"
                ));
                email_column = Some(col.clone());
                finals.push(format!("NULLIF({col}, '') AS {col}"));
            }
            (Shape::Identifier, limit) => {
                let long = limit.map_or(String::new(), |limit| {
                    format!("WHEN character_length({col}) > {limit} THEN 'identifier_too_long' ")
                });
                let missing = if is_key {
                    format!("WHEN {col} IS NULL THEN 'missing_identifier' ")
                } else {
                    String::new()
                };
                if !(long.is_empty() && missing.is_empty()) {
                    checks.push(format!("CASE {missing}{long}END"));
                }
                finals.push(col.clone());
            }
            (Shape::EmailList, _) => {
                too_long.push((
                    format!("sg_alternate_email_count({col}) > {MAX_ALTERNATE_EMAILS}"),
                    m.field.name.clone(),
                ));
                finals.push(format!("sg_alternate_emails({col}) AS {col}"));
            }
            (_, Some(limit)) => {
                too_long.push((
                    format!("character_length({col}) > {limit}"),
                    m.field.name.clone(),
                ));
                finals.push(match export.field_length_policy {
                    FieldLengthPolicy::Truncate => format!("left({col}, {limit}) AS {col}"),
                    FieldLengthPolicy::Reject => col.clone(),
                });
            }
            _ => finals.push(col.clone()),
        }
    }
    // The key always has a check; validation refuses an export whose key is not mapped.
    let identifier_problem = match checks.as_slice() {
        [] => "CAST(NULL AS VARCHAR)".to_owned(),
        [one] => one.clone(),
        many => format!("COALESCE({})", many.join(", ")),
    };

    let any_too_long = if too_long.is_empty() {
        "false".to_owned()
    } else {
        too_long
            .iter()
            .map(|(c, _)| format!("COALESCE({c}, false)"))
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    let detail = if too_long.is_empty() {
        "CAST(NULL AS VARCHAR)".to_owned()
    } else {
        let parts: Vec<String> = too_long
            .iter()
            .map(|(c, name)| format!("CASE WHEN {c} THEN {} END", quote_str(name)))
            .collect();
        format!("NULLIF(concat_ws(',', {}), '')", parts.join(", "))
    };
    let list_too_long = too_long
        .iter()
        .filter(|(c, _)| c.starts_with("sg_alternate_email_count"))
        .map(|(c, _)| format!("COALESCE({c}, false)"))
        .collect::<Vec<_>>();
    let (reason, reason_detail, truncated) = match export.field_length_policy {
        FieldLengthPolicy::Reject => {
            let list_clause = if list_too_long.is_empty() {
                String::new()
            } else {
                format!(
                    "WHEN {} THEN 'too_many_alternate_emails' ",
                    list_too_long.join(" OR ")
                )
            };
            (
                format!(
                    "COALESCE({identifier_problem}, CASE {list_clause}WHEN {any_too_long} THEN 'field_too_long' END)"
                ),
                format!("CASE WHEN {identifier_problem} IS NULL THEN {detail} END"),
                "false".to_owned(),
            )
        }
        FieldLengthPolicy::Truncate => (
            identifier_problem,
            "CAST(NULL AS VARCHAR)".to_owned(),
            format!("({any_too_long})"),
        ),
    };

    let order_columns: String = order.iter().map(|(c, _)| format!(", {c}")).collect();
    let finals = finals.join(", ");
    // Worked out for the rows it rejects only (a CASE evaluates its branch on those).
    let detail = match &email_column {
        Some(col) => format!(
            "CASE WHEN __reason = 'invalid_email' THEN sg_email_flaw({col}) ELSE __detail END AS __detail"
        ),
        None => "__detail".to_owned(),
    };
    let checked = |members: &str| {
        format!(
            "WITH __members AS ({members}), \
             __checked AS (SELECT *, {reason} AS __reason, {reason_detail} AS __detail, {truncated} AS __truncated FROM __members) \
             SELECT __seg, CASE WHEN __reason IS NOT NULL THEN __key END AS __key, \
             CASE WHEN __reason IS NOT NULL THEN __raw_email END AS __raw_email, \
             __reason, {detail}, __truncated, {finals}{order_columns} FROM __checked"
        )
    };
    ExportQuery {
        export: export.name.clone(),
        sql: checked(&members.join(" UNION ALL ")),
        segment_sql: members.iter().map(|m| checked(m)).collect(),
        fields: mapped.iter().map(|m| m.field.clone()).collect(),
        key: export.identifier,
        segments: selects.into_iter().map(|(_, s, _, _)| s).collect(),
        custom_field_types: mapped
            .iter()
            .filter(|m| m.field.kind == FieldKind::Custom)
            .map(|m| {
                let t = match m.shape {
                    Shape::Integer | Shape::Float => "Number",
                    Shape::Date(_) => "Date",
                    _ => "Text",
                };
                (m.field.name.clone(), t)
            })
            .collect(),
        order_descending: order.iter().map(|(_, desc)| *desc).collect(),
        probes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn a_problem_the_same_in_several_segments_is_said_once_naming_them() {
        let problems = [
            "mapping.tags: in segment `vip`, `tags` is List(Utf8); join it",
            "mapping.city: `city` is not valid SQL: Expected: an expression",
            "mapping.tags: in segment `lapsed`, `tags` is List(Utf8); join it",
            "mapping.city: `city` is not valid SQL: Expected: an expression",
            "mapping.age: in segment `vip`, `age` is Int64 in segment `vip` but Utf8",
            "mapping.tags: in segment `new`, `tags` is List(Utf8); join it",
            "mapping.zip: column `zip` is not in segment `lapsed`; its columns are: id",
            "mapping.tags: in segment `vip`, `tags` is List(Utf8); join it",
        ];
        assert_eq!(
            said_once(problems.map(String::from).to_vec()),
            [
                "mapping.tags: in segments `vip`, `lapsed` and `new`, `tags` is List(Utf8); join it",
                "mapping.city: `city` is not valid SQL: Expected: an expression",
                "mapping.age: in segment `vip`, `age` is Int64 in segment `vip` but Utf8",
                "mapping.zip: column `zip` is not in segment `lapsed`; its columns are: id",
            ]
        );
    }

    #[test]
    fn a_missing_column_of_a_wide_segment_names_the_one_meant_and_the_first_forty() {
        let fields: Vec<Field> = (0..50)
            .map(|i| Field::new(format!("col_{i:02}"), DataType::Utf8, true))
            .chain([Field::new("first_name", DataType::Utf8, true)])
            .collect();
        let schema: SchemaRef = std::sync::Arc::new(Schema::new(fields));
        let said = explain_expression_error("firstname", "vip", &schema, "not found");
        let first_forty: Vec<String> = (0..40).map(|i| format!("col_{i:02}")).collect();
        assert_eq!(
            said,
            format!(
                "column `firstname` is not in segment `vip` (did you mean `first_name`?); its columns are: {}, and 11 more",
                first_forty.join(", ")
            )
        );
    }

    #[test]
    fn a_column_name_with_a_space_in_another_case_is_said_to_be_a_name() {
        let schema: SchemaRef = std::sync::Arc::new(Schema::new(vec![
            Field::new("Email", DataType::Utf8, true),
            Field::new("First Name", DataType::Utf8, true),
        ]));
        let said = explain_expression_error("first name", "vip", &schema, "Expected: …");
        assert_eq!(
            said,
            "column `first name` is not in segment `vip` (did you mean `First Name`?); its \
             columns are: Email, First Name"
        );
    }
}
