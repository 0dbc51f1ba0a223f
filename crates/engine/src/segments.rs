//! Segments: named SQL queries, checked to be queries only, planned against the sources
//! and registered as views so exports and other segments can select from them.

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{BinaryExpr, Expr, JoinType, LogicalPlan, Operator};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;
use pipeline_spec::Pipeline;

/// Only queries: no DDL, DML, COPY, SET or other statements.
pub(crate) fn query_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Plans and registers every segment; returns their schemas and one message per problem.
pub(crate) async fn register_all(
    ctx: &SessionContext,
    pipeline: &Pipeline,
) -> (BTreeMap<String, SchemaRef>, Vec<String>) {
    let mut problems = Vec::new();
    let mut pending: BTreeMap<&String, String> = BTreeMap::new();
    for (name, sql) in &pipeline.file.segments {
        match check_query_only(sql) {
            Ok(()) => {
                pending.insert(name, String::new());
            }
            Err(message) => problems.push(format!("segment `{name}`: {message}")),
        }
    }
    let mut schemas = BTreeMap::new();
    // A segment may select from another; register in passes until no more succeed.
    loop {
        let mut progressed = false;
        for (name, last_error) in pending.iter_mut() {
            if schemas.contains_key(*name) {
                continue;
            }
            let sql = &pipeline.file.segments[*name];
            match ctx.sql_with_options(sql, query_only()).await {
                Ok(df) => {
                    if let Some(message) = repeated_column(df.schema()) {
                        *last_error = message;
                        continue;
                    }
                    // The optimizer folds constants, so a literal that cannot be cast
                    // (`lifetime_value > 'abc'`) fails here rather than in the run.
                    let null_compared = compared_with_null_in(df.logical_plan(), pipeline);
                    let unconditioned = match ctx.state().optimize(df.logical_plan()) {
                        Ok(optimized) => unconditioned_join(&optimized, sql, pipeline),
                        Err(e) => {
                            *last_error = e.to_string();
                            continue;
                        }
                    };
                    let schema = SchemaRef::new(df.schema().as_arrow().clone());
                    if let Err(e) = ctx.register_table(name.as_str(), df.into_view()) {
                        *last_error = e.to_string();
                        continue;
                    }
                    schemas.insert((*name).clone(), schema);
                    progressed = true;
                    // Registered all the same, so that segments selecting from it are
                    // checked too.
                    for message in [null_compared, unconditioned].into_iter().flatten() {
                        problems.push(format!("segment `{name}`: {message}"));
                    }
                }
                Err(e) => *last_error = e.to_string(),
            }
        }
        if !progressed {
            break;
        }
    }
    let failed: Vec<&String> = pending
        .keys()
        .copied()
        .filter(|name| !schemas.contains_key(*name))
        .collect();
    let cycles = cycles(ctx, pipeline, &failed);
    for (name, error) in pending {
        if schemas.contains_key(name) {
            continue;
        }
        match cycles.get(name.as_str()) {
            Some(cycle) if cycle.len() == 1 => problems.push(format!(
                "segment `{name}` selects from itself: a segment may select from sources and other segments only"
            )),
            Some(cycle) => problems.push(format!(
                "segment `{name}` is in a cycle of segments that select from each other ({} → {name}): break the cycle",
                cycle.join(" → ")
            )),
            None => problems.push(format!(
                "segment `{name}`: {}",
                missing_table(&error, pipeline).unwrap_or_else(|| quote_advice(
                    clean_sql_error(&error),
                    &pipeline.file.segments[name]
                ))
            )),
        }
    }
    (schemas, problems)
}

/// A join with no condition tying its sides' rows (`FROM profiles p, memberships m` without
/// the `WHERE` that matches them), which pairs every row of one side with every row of the
/// other: on profile tables, a run that never ends. A side that is one row (an aggregate
/// without `GROUP BY`, a `LIMIT 1`) is no mistake, and `CROSS JOIN` written out says every
/// pairing is meant. Another segment the SQL selects from is its own concern.
fn unconditioned_join(plan: &LogicalPlan, sql: &str, pipeline: &Pipeline) -> Option<String> {
    if writes_cross_join(sql) {
        return None;
    }
    let (left, right) = in_own_sql(plan, pipeline, |node| match node {
        LogicalPlan::Join(join)
            if join.on.is_empty()
                && join.filter.is_none()
                && matches!(
                    join.join_type,
                    JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
                )
                && !one_row(&join.left)
                && !one_row(&join.right) =>
        {
            Some((tables(&join.left), tables(&join.right)))
        }
        _ => None,
    })?;
    Some(format!(
        "it joins {left} and {right} with no condition tying their rows, so every row of one \
         meets every row of the other; add the condition that matches them (`ON` or `WHERE`, \
         such as `p.customer_id = m.customer_id`), or write `CROSS JOIN` if every pairing is meant"
    ))
}

/// The SQL's tokens without blanks and comments; `None` for a text the tokenizer cannot
/// read (the parser says what is wrong with it). The tokenizer is iterative: any text is
/// safe to read.
fn sql_tokens(sql: &str) -> Option<Vec<Token>> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;
    let mut tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize().ok()?;
    tokens.retain(|t| !matches!(t, Token::Whitespace(_)));
    Some(tokens)
}

/// The SQL writes the keywords `CROSS JOIN` (not inside a text or a comment).
fn writes_cross_join(sql: &str) -> bool {
    let Some(tokens) = sql_tokens(sql) else {
        return false;
    };
    let keywords: Vec<Option<Keyword>> = tokens
        .iter()
        .map(|t| match t {
            Token::Word(w) if w.quote_style.is_none() => Some(w.keyword),
            _ => None,
        })
        .collect();
    keywords
        .windows(2)
        .any(|w| w == [Some(Keyword::CROSS), Some(Keyword::JOIN)])
}

/// A comparison with `NULL` (`city = NULL`, `city <> NULL`) in a segment's own SQL: it is
/// never true, so the segment silently selects nothing (or keeps nothing of what it
/// compares). Another segment the SQL selects from is its own concern.
fn compared_with_null_in(plan: &LogicalPlan, pipeline: &Pipeline) -> Option<String> {
    in_own_sql(plan, pipeline, |node| {
        node.expressions().iter().find_map(compared_with_null)
    })
}

/// The first of `find`'s answers over the nodes of a segment's own SQL: the nodes of
/// another segment it selects from (inlined under that segment's name) are left out.
fn in_own_sql<T>(
    plan: &LogicalPlan,
    pipeline: &Pipeline,
    mut find: impl FnMut(&LogicalPlan) -> Option<T>,
) -> Option<T> {
    let mut found = None;
    let _ = plan.apply(|node| {
        if let LogicalPlan::SubqueryAlias(alias) = node
            && pipeline.file.segments.contains_key(alias.alias.table())
        {
            return Ok(TreeNodeRecursion::Jump);
        }
        found = find(node);
        Ok(match found {
            Some(_) => TreeNodeRecursion::Stop,
            None => TreeNodeRecursion::Continue,
        })
    });
    found
}

/// What to write instead of a comparison with `NULL` in `expr`, if it holds one.
pub(crate) fn compared_with_null(expr: &Expr) -> Option<String> {
    let mut found = None;
    let _ = expr.apply(|e| {
        if let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e
            && matches!(
                op,
                Operator::Eq
                    | Operator::NotEq
                    | Operator::Lt
                    | Operator::LtEq
                    | Operator::Gt
                    | Operator::GtEq
            )
            && [left, right].iter().any(|side| is_null(side))
        {
            let fix = match op {
                Operator::NotEq => "`IS NOT NULL`",
                _ => "`IS NULL` (or `IS NOT NULL`)",
            };
            found = Some(format!(
                "`{op} NULL` is never true (a comparison with NULL gives NULL, whatever the value): write {fix}"
            ));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// `NULL`, given a type or not (`CAST(NULL AS VARCHAR)`).
fn is_null(expr: &Expr) -> bool {
    match expr {
        Expr::Literal(value, _) => value.is_null(),
        Expr::Cast(cast) => is_null(&cast.expr),
        Expr::TryCast(cast) => is_null(&cast.expr),
        _ => false,
    }
}

/// Whether a plan gives at most one row whatever the tables hold.
fn one_row(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Aggregate(a) => a.group_expr.is_empty(),
        LogicalPlan::Limit(limit) => matches!(
            limit.get_fetch_type(),
            Ok(datafusion::logical_expr::logical_plan::FetchType::Literal(
                Some(0 | 1)
            ))
        ),
        LogicalPlan::EmptyRelation(_) => true,
        LogicalPlan::Values(v) => v.values.len() <= 1,
        LogicalPlan::Projection(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_) => plan.inputs().iter().all(|input| one_row(input)),
        _ => false,
    }
}

/// The tables a side of a join reads, as `profiles` or `profiles, memberships`.
fn tables(plan: &LogicalPlan) -> String {
    let mut names: Vec<String> = Vec::new();
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = format!("`{}`", scan.table_name.table());
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    match names.as_slice() {
        [] => "a subquery".to_owned(),
        _ => names.join(", "),
    }
}

/// What a segment selects from that is not there, in the file's words: DataFusion names
/// `datafusion.public.<name>`, and the user wrote a source or segment name.
fn missing_table(error: &str, pipeline: &Pipeline) -> Option<String> {
    let (_, rest) = error.split_once("table '")?;
    let (table, _) = rest.split_once("' not found")?;
    let name = table.strip_prefix("datafusion.public.").unwrap_or(table);
    // A segment that planned would have been found: this one has failed.
    if pipeline.file.segments.contains_key(name) {
        return Some(format!(
            "it selects from segment `{name}`, which has a problem of its own (see its message)"
        ));
    }
    let names = |keys: Vec<&String>| {
        let quoted: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
        if quoted.is_empty() {
            "none".to_owned()
        } else {
            quoted.join(", ")
        }
    };
    let hint = if name.contains('.') || name.contains('/') {
        "; a segment reads only the sources declared under `sources:` (declare a file or table there), by name"
    } else {
        ""
    };
    let meant = pipeline_spec::did_you_mean(
        name,
        pipeline
            .file
            .sources
            .keys()
            .chain(pipeline.file.segments.keys())
            .map(String::as_str),
    );
    Some(format!(
        "it selects from `{name}`{meant}, which is neither a source nor a segment (sources: {}; segments: {}){hint}",
        names(pipeline.file.sources.keys().collect()),
        names(pipeline.file.segments.keys().collect()),
    ))
}

/// Two columns of one name in a segment's rows (`p.customer_id` and `m.customer_id` from
/// `SELECT p.*, m.*`): DataFusion plans the query, but the segment's view cannot be
/// selected from, and every mapped column would be reported missing.
fn repeated_column(schema: &DFSchema) -> Option<String> {
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    for (qualifier, field) in schema.iter() {
        let name = field.name().as_str();
        let written = match qualifier {
            Some(q) => format!("{q}.{name}"),
            None => name.to_owned(),
        };
        if let Some(first) = seen.get(name) {
            return Some(format!(
                "two of its columns are named `{name}` (`{first}` and `{written}`), but exports map a segment's columns by name: select each column once (`p.*` alone rather than `p.*, m.*` when the other table only filters), or rename one (`{written} AS ...`)"
            ));
        }
        seen.insert(name, written);
    }
    None
}

/// The segments among `failed` that select from themselves through other failed ones:
/// each with the cycle it is in, starting from it.
fn cycles<'a>(
    ctx: &SessionContext,
    pipeline: &'a Pipeline,
    failed: &[&'a String],
) -> BTreeMap<&'a str, Vec<&'a str>> {
    let state = ctx.state();
    // Which failed segments each failed segment selects from.
    let edges: BTreeMap<&str, Vec<&str>> = failed
        .iter()
        .map(|name| {
            let sql = &pipeline.file.segments[*name];
            let refs = DFParser::parse_sql(sql)
                .ok()
                .and_then(|mut statements| statements.pop_front())
                .and_then(|statement| state.resolve_table_references(&statement).ok())
                .unwrap_or_default();
            let targets = failed
                .iter()
                .filter(|other| refs.iter().any(|r| r.table() == other.as_str()))
                .map(|other| other.as_str())
                .collect();
            (name.as_str(), targets)
        })
        .collect();
    let mut out = BTreeMap::new();
    for start in edges.keys().copied() {
        // Breadth-first from `start`, remembering the way back, until `start` is reached.
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closed = false;
        while let Some(at) = queue.pop_front() {
            for next in edges.get(at).into_iter().flatten().copied() {
                if next == start {
                    came_from.insert(start, at);
                    closed = true;
                    break;
                }
                if !came_from.contains_key(next) {
                    came_from.insert(next, at);
                    queue.push_back(next);
                }
            }
            if closed {
                break;
            }
        }
        if closed {
            let mut cycle = vec![start];
            let mut at = came_from[start];
            while at != start {
                cycle.push(at);
                at = came_from[at];
            }
            cycle[1..].reverse();
            out.insert(start, cycle);
        }
    }
    out
}

/// Most `AND`/`OR` operators one SQL text may chain. Planning and optimising walk an
/// expression recursively, and a chain nests as deep as it is long: thousands of terms
/// would overflow the stack instead of failing with a message.
pub(crate) const MAX_BOOLEAN_OPERATORS: usize = 1_000;

/// Refuses SQL whose `AND`/`OR` chains are too long to plan safely. The tokenizer is
/// iterative, so counting cannot overflow whatever the text.
pub(crate) fn check_expression_size(sql: &str) -> Result<(), String> {
    let Some(tokens) = sql_tokens(sql) else {
        // The parser reports what is wrong with the text.
        return Ok(());
    };
    let chained = tokens
        .iter()
        .filter(|t| matches!(t, Token::Word(w) if matches!(w.keyword, Keyword::AND | Keyword::OR)))
        .count();
    if chained > MAX_BOOLEAN_OPERATORS {
        return Err(format!(
            "chains {chained} AND/OR operators, more than the {MAX_BOOLEAN_OPERATORS} that can be planned safely: write a long list of alternatives as `column IN (...)`, or join a table of the values"
        ));
    }
    Ok(())
}

/// Refuses anything but one query, naming what was found.
pub(crate) fn check_query_only(sql: &str) -> Result<(), String> {
    check_expression_size(sql)?;
    let statements = DFParser::parse_sql(sql)
        .map_err(|e| format!("SQL syntax error: {}", clean_sql_error(&e.to_string())))?;
    if statements.len() != 1 {
        return Err(format!(
            "must be exactly one SELECT query, found {} statements",
            statements.len()
        ));
    }
    match &statements[0] {
        DFStatement::Statement(s) if matches!(**s, Statement::Query(_)) => Ok(()),
        _ => Err(format!(
            "only a SELECT query may define a segment, found {}; segments read data and never change it",
            leading_keywords(sql)
        )),
    }
}

fn leading_keywords(sql: &str) -> String {
    let words: Vec<String> = sql
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
        .take(3)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    if words.is_empty() {
        "a statement that is not a query".into()
    } else {
        format!("`{}`", words.join(" "))
    }
}

/// DataFusion prefixes errors with their kind; users need the message, and, for a query
/// refused while it is planned, what to write instead.
pub(crate) fn clean_sql_error(message: &str) -> String {
    let m = without_kind(message);
    case_advice(&m)
        .or_else(|| cast_advice(&m))
        .or_else(|| signature_advice(&m))
        .or_else(|| function_advice(&m))
        .or_else(|| comparison_advice(&m))
        .or_else(|| regex_advice(&m))
        .or_else(|| {
            // Most often an apostrophe in a name (`'O'Brien'`).
            m.starts_with("Unterminated string literal")
                .then(|| format!("{m}: a single quote inside a text is written twice ('O''Brien')"))
        })
        .unwrap_or(m)
}

/// A regular expression the regex crate cannot read, said on one line: DataFusion passes
/// on the crate's drawing of the pattern with a caret under the fault.
fn regex_advice(message: &str) -> Option<String> {
    let (_, drawn) = message.split_once("regex parse error:")?;
    let mut lines = drawn.lines().map(str::trim).filter(|l| !l.is_empty());
    let pattern = lines.next()?;
    let why = lines.find_map(|l| l.strip_prefix("error: "))?;
    Some(format!(
        "the regular expression `{pattern}` is not valid: {why} (the syntax is Rust's regex crate's: https://docs.rs/regex/latest/regex/#syntax)"
    ))
}

/// Two kinds of values compared that DataFusion cannot bring to one type, worded by its
/// analyzer as `type_coercion caused by ... Cannot infer common argument type`.
fn comparison_advice(message: &str) -> Option<String> {
    const CANNOT: &str = "Cannot infer common argument type for comparison operation ";
    let (_, compared) = message.split_once(CANNOT)?;
    let compared = compared.lines().next()?.trim();
    let mut parts = compared.split(' ');
    let (left, op, right) = (parts.next()?, parts.next()?, parts.next()?);
    if left == "Boolean" || right == "Boolean" {
        let other = if left == "Boolean" { right } else { left };
        return Some(format!(
            "true/false values are compared ({op}) with {other} values: a true/false column is a condition by itself (`WHERE is_subscribed`, `WHERE NOT is_subscribed`); compare it with `true` or `false`, not with a number or a text"
        ));
    }
    Some(format!(
        "{left} values are compared ({op}) with {right} values, which do not compare: cast one side to the other's type (`CAST(col AS VARCHAR)`, `CAST(col AS BIGINT)`, `CAST(col AS DATE)`)"
    ))
}

/// What to write in DataFusion's SQL for a function of another dialect (Snowflake, Spark,
/// BigQuery, MySQL, SQL Server) that DataFusion does not have. Each form given was run
/// through DataFusion.
fn other_dialect(name: &str) -> Option<String> {
    let said = match name {
        "date_add" | "dateadd" | "date_sub" | "datesub" | "adddate" | "subdate"
        | "timestampadd" | "add_months" => {
            "add or subtract an interval: `signup_date + INTERVAL '30 days'`, `now() - INTERVAL '1 month'`"
        }
        "datediff" | "date_diff" | "timestampdiff" | "months_between" | "days_between" => {
            "the days from one date to another are `later - earlier` (a number of days); between two times, `date_part('day', later - earlier)`"
        }
        "getdate" | "sysdate" | "systimestamp" | "getutcdate" | "sysdatetime"
        | "current_datetime" => "write `now()` (when the run started) or `current_date`",
        "isnull" => {
            "write `col IS NULL`; to put a value in place of a null, `coalesce(col, value)`"
        }
        "zeroifnull" => "write `coalesce(col, 0)`",
        "nullifzero" => "write `nullif(col, 0)`",
        "len" => "write `character_length(col)`",
        "iff" | "if" => "write `CASE WHEN condition THEN value ELSE other END`",
        "lcase" => "write `lower(col)`",
        "ucase" => "write `upper(col)`",
        "mid" => "write `substr(text, start, length)`",
        "space" => "write `repeat(' ', n)`",
        "charindex" | "locate" => {
            "write `strpos(text, part)`: the part's position in the text (from 1; 0 when it is not there)"
        }
        "str_to_date" | "parse_date" | "parse_timestamp" => {
            "write `to_date(text, '%m/%d/%Y')` or `to_timestamp(text, '%m/%d/%Y %H:%M')` (chrono's format codes)"
        }
        "strftime" | "date_format" | "format_date" | "format_datetime" | "format_timestamp" => {
            "write `to_char(col, '%Y-%m-%d')` (chrono's format codes)"
        }
        "rlike" | "regexp_contains" => "write `text ~ 'pattern'` or `regexp_like(text, 'pattern')`",
        "unix_timestamp" | "epoch" | "unix_seconds" => {
            "write `date_part('epoch', col)`: the seconds since 1970"
        }
        "from_unixtime" | "timestamp_seconds" => "write `to_timestamp(seconds)`",
        "last_day" => "write `date_trunc('month', col) + INTERVAL '1 month' - INTERVAL '1 day'`",
        "dayofweek" | "weekday" => "write `date_part('dow', col)` (0 is Sunday)",
        "dayofyear" => "write `date_part('doy', col)`",
        "json_extract"
        | "get_json_object"
        | "json_value"
        | "json_extract_scalar"
        | "json_extract_path_text"
        | "parse_json" => {
            "it reads no JSON text: keep the value in a column of its own, or in a struct column, read as `col['key']`"
        }
        "year" | "quarter" | "month" | "week" | "weekofyear" | "day" | "dayofmonth" | "hour"
        | "minute" | "second" => {
            let part = match name {
                "weekofyear" => "week",
                "dayofmonth" => "day",
                part => part,
            };
            return Some(format!(
                "write `date_part('{part}', col)` or `extract({} FROM col)`",
                part.to_ascii_uppercase()
            ));
        }
        _ => return None,
    };
    Some(said.to_owned())
}

/// A function DataFusion does not know: what to write instead when another dialect has
/// it. DataFusion's own guess at the name it meant is often far off (`iff` → `sinh`), and
/// never one of the rules' functions, which are not for segments.
fn function_advice(message: &str) -> Option<String> {
    if message.contains("This feature is not implemented: TOP") {
        return Some(
            "DataFusion's SQL has no `TOP n`: a segment selects every member, and the export keeps the first ones by its `order_by` up to `max_profiles` (with `on_cap_exceeded: truncate`); for a sample, end the query with `LIMIT n`"
                .to_owned(),
        );
    }
    // SQL Server's `CONVERT(type, value)`, refused with a dump of the parser's tree.
    if message.contains("Unsupported ast node in sqltorel: Convert") {
        return Some(
            "DataFusion's SQL has no `CONVERT`; write `CAST(value AS type)` (`CAST(col AS VARCHAR)`, `CAST(col AS BIGINT)`)"
                .to_owned(),
        );
    }
    if let Some((_, rest)) = message.split_once("Unsupported SQL type ") {
        let written = rest.lines().next().unwrap_or(rest).trim();
        let base = written
            .split('(')
            .next()
            .unwrap_or(written)
            .to_ascii_uppercase();
        let instead = match base.as_str() {
            "INT64" | "LONG" => "BIGINT",
            "BYTEINT" => "TINYINT",
            // Oracle's NUMBER(p) holds whole numbers; NUMBER and NUMBER(p, s) do not.
            "NUMBER" if written.contains('(') && !written.contains(',') => "BIGINT",
            "NUMBER" | "MONEY" | "SMALLMONEY" => "DECIMAL(p, s) (`DECIMAL(18, 2)`) or DOUBLE",
            "FLOAT64" | "FLOAT8" => "DOUBLE",
            "NVARCHAR" | "NVARCHAR2" | "VARCHAR2" | "NCHAR" | "NTEXT" | "CLOB" => "VARCHAR",
            "DATETIME" | "DATETIME2" | "SMALLDATETIME" | "TIMESTAMP_NTZ" => "TIMESTAMP",
            "DATETIMEOFFSET" | "TIMESTAMP_TZ" | "TIMESTAMP_LTZ" => "TIMESTAMPTZ",
            "BIT" => "BOOLEAN",
            _ => {
                "one of its types: BIGINT, INT, DOUBLE, DECIMAL(p, s), VARCHAR, BOOLEAN, DATE, TIMESTAMP"
            }
        };
        return Some(format!(
            "DataFusion's SQL has no type `{written}`: write {instead}"
        ));
    }
    // MySQL's and Spark's `col RLIKE 'x'` / `col REGEXP 'x'`.
    if message.contains("Unsupported ast node in sqltorel: RLike") {
        return Some(
            "DataFusion's SQL has no `RLIKE` or `REGEXP` operator: write `col ~ 'pattern'` for a regular expression match (`~*` ignores case; `!~` and `!~*` for NOT)"
                .to_owned(),
        );
    }
    if message.contains("Unsupported ast node in sqltorel: MatchAgainst") {
        return Some(
            "DataFusion's SQL has no `MATCH ... AGAINST` (MySQL's full-text search): write `col ILIKE '%word%'` or `col ~* 'word'`"
                .to_owned(),
        );
    }
    if message.contains("This feature is not implemented: ANY in LIKE expression") {
        return Some(
            "DataFusion's SQL has no `LIKE ANY (...)`: write each pattern, `(col LIKE 'a%' OR col LIKE 'b%')`, or one regular expression, `col ~ '^(a|b)'`"
                .to_owned(),
        );
    }
    // `col LIKE ALL ('a%', 'b%')` reads as a call of a function `all`.
    if message.contains("Invalid function 'all'") {
        return Some(
            "DataFusion's SQL has no `LIKE ALL (...)`: write each pattern, `(col LIKE 'a%' AND col LIKE 'b%')`"
                .to_owned(),
        );
    }
    // Another construct the planner has no form for: its name, not a dump of the
    // parser's tree (with every identifier's position).
    if let Some((_, node)) = message.split_once("Unsupported ast node in sqltorel: ") {
        let name: String = node
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        return Some(format!(
            "DataFusion's SQL does not support this construct (`{name}` in its parser's terms): write it another way"
        ));
    }
    let (_, rest) = message.split_once("Invalid function '")?;
    let (name, _) = rest.split_once('\'')?;
    if let Some(advice) = other_dialect(&name.to_ascii_lowercase()) {
        return Some(format!(
            "DataFusion's SQL has no function `{name}` (other dialects do): {advice}"
        ));
    }
    let guessed_a_rule = message
        .split_once("Did you mean '")
        .is_some_and(|(_, guess)| guess.starts_with("sg_"));
    guessed_a_rule.then(|| format!("DataFusion's SQL has no function `{name}`"))
}

/// A DataFusion error's message without the kinds it is prefixed with: for a failure
/// while a query ran, whose quoted values come from the data, not from the SQL.
pub(crate) fn without_kind(message: &str) -> String {
    let mut m = message.trim();
    for prefix in [
        "Error during planning: ",
        "SQL error: ",
        "Schema error: ",
        "ParserError(\"",
        "TokenizerError(\"",
    ] {
        if let Some(rest) = m.strip_prefix(prefix) {
            m = rest;
        }
    }
    // `Optimizer rule 'simplify_expressions' failed\ncaused by\n<why>`, and the analyzer's
    // `type_coercion\ncaused by\n<why>`: the why.
    if (m.starts_with("Optimizer rule") || m.starts_with("type_coercion"))
        && let Some((_, why)) = m.split_once("caused by\n")
    {
        m = why.trim();
        m = m.strip_prefix("Error during planning: ").unwrap_or(m);
    }
    for prefix in ["Arrow error: ", "External error: ", "Execution error: "] {
        if let Some(rest) = m.strip_prefix(prefix) {
            m = rest;
        }
    }
    // sqlparser's `at Line: 1, Column: 46`, said as the rest of the message is.
    m.trim_end_matches("\")")
        .replace(" at Line: ", " at line ")
        .replace(", Column: ", ", column ")
}

/// Arrow's refusal to read a quoted text as a number or a date, most often met where a
/// column of them is compared with a text (`year = 'twenty'`): says what to write.
fn cast_advice(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("Cannot cast string '")?;
    let (_, target) = rest.rsplit_once("' to value of ")?;
    let values = match target.strip_suffix(" type")? {
        t if t.starts_with("Int") || t.starts_with("UInt") => "whole numbers",
        t if t.starts_with("Float") || t.starts_with("Decimal") => "numbers",
        t if t.starts_with("Date") || t.starts_with("Timestamp") => "dates or times",
        _ => return None,
    };
    Some(format!(
        "{message}: a text in quotes meets {values} (a column compared with it, say), and is \
         not one; compare with a value of their kind, or cast the column to text \
         (`CAST(col AS VARCHAR) = '...'`); partition folders' values read as whole \
         numbers or dates when every folder's value is one"
    ))
}

/// DataFusion's refusal of a function called with values of types it does not take
/// (worded, for some functions, as an internal error and a bug to report): the call, the
/// forms the function has, and the cast that fixes it.
fn signature_advice(message: &str) -> Option<String> {
    const MATCHES: &str = "No function matches the given name and argument types '";
    let (before, rest) = message.split_once(MATCHES)?;
    let (call, rest) = rest.split_once("'. ")?;
    let (function, types) = call.split_at(call.find('(').unwrap_or(call.len()));
    // A form of its own checks (`UserDefined`) names no types; its reason says what is
    // wrong (`concat_ws expects at least 2 arguments, got 1`).
    let forms: Vec<&str> = rest
        .split_once("Candidate functions:")
        .map(|(_, forms)| {
            (forms.lines().map(str::trim))
                .filter(|f| !f.is_empty() && !f.contains("UserDefined"))
                .collect()
        })
        .unwrap_or_default();
    const SHOWN: usize = 6;
    let takes = match forms.len() {
        0 => {
            let reason = before
                .rsplit_once("Error during planning: ")
                .map(|(_, r)| r);
            let reason = reason.unwrap_or(before).trim().trim_end_matches('.');
            return Some(format!("no form of `{function}` takes {types}: {reason}"));
        }
        n if n <= SHOWN => forms.join(" or "),
        n => format!(
            "{} (and {} more forms)",
            forms[..SHOWN].join(" or "),
            n - SHOWN
        ),
    };
    Some(format!(
        "no form of `{function}` takes {types}: it takes {takes}; cast the values to a type \
         it takes (`CAST(col AS VARCHAR)` makes text, `CAST(col AS BIGINT)` a whole number)"
    ))
}

/// `message`, with advice when it is about a column named by a text in double quotes
/// that `sql` holds (`city = "Oslo"`, as MySQL and others allow): SQL reads that as a
/// column's name, and a text goes in single quotes.
pub(crate) fn quote_advice(message: String, sql: &str) -> String {
    const NO_FIELD: &str = "No field named \"";
    if message.contains("List(")
        && let Some(name) = bracketed_name(sql)
    {
        return format!(
            "`[{name}]` is a list in DataFusion's SQL, not a column's name (SQL Server writes names in brackets): write `{name}`, or `\"{name}\"` in double quotes for a name with spaces or capitals"
        );
    }
    let Some((before, rest)) = message.split_once(NO_FIELD) else {
        return unquoted_text_advice(message, sql);
    };
    let Some((name, after)) = rest.split_once('"') else {
        return message;
    };
    if !sql.contains(&format!("\"{name}\"")) {
        return message;
    }
    let after = after.strip_prefix('.').unwrap_or(after);
    format!(
        "{before}{NO_FIELD}{name}\": double quotes name a column; a text goes in single quotes \
         ('{}').{after}",
        name.replace('\'', "''")
    )
}

/// A name in brackets, as SQL Server writes column names (`[first_name] = 'Ada'`), which
/// DataFusion reads as a list of one value: not an index (`tags[1]`) after a value.
fn bracketed_name(sql: &str) -> Option<String> {
    let tokens = sql_tokens(sql)?;
    tokens.windows(3).enumerate().find_map(|(i, w)| match w {
        [Token::LBracket, Token::Word(word), Token::RBracket]
            if word.quote_style.is_none()
                && !matches!(
                    i.checked_sub(1).map(|p| &tokens[p]),
                    Some(Token::RParen | Token::RBracket)
                ) && !matches!(
                    i.checked_sub(1).map(|p| &tokens[p]),
                    Some(Token::Word(before)) if before.keyword == Keyword::NoKeyword || before.quote_style.is_some()
                ) =>
        {
            Some(word.value.clone())
        }
        _ => None,
    })
}

/// A text written without quotes where a value is compared (`country = US`, `country IN
/// (US, CA)`): SQL reads a name, DataFusion says it has no such column.
fn unquoted_text_advice(message: String, sql: &str) -> String {
    const NO_FIELD: &str = "No field named ";
    let Some((before, rest)) = message.split_once(NO_FIELD) else {
        return message;
    };
    let name_len = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let (name, after) = rest.split_at(name_len);
    // A name near a column's is a misspelt column: DataFusion says which.
    if name.is_empty() || after.contains("Did you mean") {
        return message;
    }
    // ASCII only, so that its positions are the SQL's.
    let lower = sql.to_ascii_lowercase();
    let compared = lower.match_indices(name).find_map(|(at, _)| {
        let whole = !lower[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
            && !lower[at + name.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_');
        let before = lower[..at].trim_end();
        let in_list = before.ends_with(['(', ','])
            && before
                .rfind('(')
                .is_some_and(|open| before[..open].trim_end().ends_with(" in"));
        (whole && (before.ends_with(['=', '<', '>']) || in_list)).then(|| &sql[at..at + name.len()])
    });
    let Some(written) = compared else {
        return message;
    };
    let after = after.strip_prefix('.').unwrap_or(after);
    format!(
        "{before}{NO_FIELD}{name}: `{written}` is read as a column's name; a text goes in single quotes ('{written}').{after}"
    )
}

/// DataFusion's advice for a name that is a column's but for its case points to a session
/// setting the pipeline file does not have: says what to write instead.
fn case_advice(message: &str) -> Option<String> {
    const ADVICE: &str =
        "\nColumn names are case sensitive. You can use double quotes to refer to the ";
    const SETTING: &str =
        " column or disable the datafusion.sql_parser.enable_ident_normalization configuration.";
    let (before, rest) = message.split_once(ADVICE)?;
    let (column, after) = rest.split_once(SETTING)?;
    Some(format!(
        "{before}\nSQL reads a name without double quotes in lower case: write {column}, \
         double quotes included.{after}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_join_is_read_as_keywords_not_as_words_in_a_text_or_a_comment() {
        for sql in [
            "SELECT * FROM p CROSS JOIN m",
            "SELECT * FROM p cross\n  join m",
            "SELECT * FROM p CROSS /* every pairing */ JOIN m",
        ] {
            assert!(writes_cross_join(sql), "{sql}");
        }
        for sql in [
            "SELECT * FROM p, m WHERE m.note = 'cross join'",
            "SELECT * FROM p, m -- no cross join here",
            "SELECT * FROM p, m WHERE \"cross\" JOIN_KEY = 1",
            "SELECT * FROM p JOIN m ON true",
        ] {
            assert!(!writes_cross_join(sql), "{sql}");
        }
    }

    /// The forms the advice on other dialects' functions gives, run through DataFusion.
    #[tokio::test]
    async fn the_forms_advised_for_other_dialects_functions_run() {
        let ctx = SessionContext::new();
        let cases = [
            ("DATE '2024-03-01' + INTERVAL '30 days'", "2024-03-31"),
            ("DATE '2024-03-31' - INTERVAL '1 month'", "2024-02-29"),
            ("DATE '2024-03-01' - DATE '2024-01-01'", "60"),
            (
                "date_part('day', TIMESTAMP '2024-03-01 00:00:00' - TIMESTAMP '2024-01-01 12:00:00')",
                "59",
            ),
            ("coalesce(NULL, 'x')", "x"),
            ("nullif(0, 0) IS NULL", "true"),
            ("character_length('héllo')", "5"),
            ("'abc' ~ 'b'", "true"),
            ("'ABC' ~* 'b'", "true"),
            ("'abc' !~ 'z'", "true"),
            ("'abc' ~ '^(a|b)'", "true"),
            ("'WORD' ILIKE '%word%'", "true"),
            ("CAST(7 AS TINYINT)", "7"),
            ("CAST(2.5 AS DOUBLE)", "2.5"),
            ("CAST(2.5 AS DECIMAL(18, 2))", "2.50"),
            (
                "CAST('2024-01-02 03:04:05' AS TIMESTAMP)",
                "2024-01-02T03:04:05",
            ),
            (
                "CAST('2024-01-02T03:04:05+01:00' AS TIMESTAMPTZ)",
                "2024-01-02T02:04:05",
            ),
            ("CAST(1 AS BOOLEAN)", "true"),
            ("substr('hello', 2, 3)", "ell"),
            ("repeat(' ', 3) = '   '", "true"),
            ("strpos('hello', 'l')", "3"),
            ("to_date('07/01/2024', '%m/%d/%Y')", "2024-07-01"),
            (
                "to_timestamp('07/01/2024 10:30', '%m/%d/%Y %H:%M')",
                "2024-07-01T10:30:00",
            ),
            ("to_char(DATE '2024-01-07', '%Y-%m-%d')", "2024-01-07"),
            ("'abc' ~ 'b' AND regexp_like('abc', 'b')", "true"),
            (
                "date_part('epoch', TIMESTAMP '1970-01-02 00:00:00')",
                "86400.0",
            ),
            ("to_timestamp(86400)", "1970-01-02T00:00:00"),
            (
                "date_trunc('month', DATE '2024-02-10') + INTERVAL '1 month' - INTERVAL '1 day'",
                "2024-02-29T00:00:00",
            ),
            ("date_part('dow', DATE '2024-01-07')", "0"),
            ("date_part('doy', DATE '2024-02-01')", "32"),
            ("extract(YEAR FROM DATE '2024-02-01')", "2024"),
            ("date_part('quarter', DATE '2024-05-01')", "2"),
            ("date_part('week', DATE '2024-01-10')", "2"),
            ("date_part('day', DATE '2024-01-10')", "10"),
            ("date_part('hour', TIMESTAMP '2024-01-10 07:08:09')", "7"),
            ("date_part('minute', TIMESTAMP '2024-01-10 07:08:09')", "8"),
            ("date_part('second', TIMESTAMP '2024-01-10 07:08:09')", "9"),
            ("named_struct('key', 1)['key']", "1"),
        ];
        for (expr, want) in cases {
            let df = ctx.sql(&format!("SELECT {expr} AS v")).await.unwrap();
            let batches = df.collect().await.unwrap();
            let got = arrow::util::display::array_value_to_string(batches[0].column(0), 0).unwrap();
            assert_eq!(got, want, "{expr}");
        }
        let said = clean_sql_error(
            "Error during planning: Invalid function 'datediff'.\nDid you mean 'datepart'?",
        );
        assert_eq!(
            said,
            "DataFusion's SQL has no function `datediff` (other dialects do): the days from one date to another are `later - earlier` (a number of days); between two times, `date_part('day', later - earlier)`"
        );
        // No guess at one of the rules' functions, which are not for segments.
        assert_eq!(
            clean_sql_error(
                "Error during planning: Invalid function 'sg_dat'.\nDid you mean 'sg_date'?"
            ),
            "DataFusion's SQL has no function `sg_dat`"
        );
        assert_eq!(
            clean_sql_error(
                "This feature is not implemented: Unsupported ast node in sqltorel: RLike { negated: false, expr: Identifier(Ident { value: \"email\", quote_style: None }), regexp: true }"
            ),
            "DataFusion's SQL has no `RLIKE` or `REGEXP` operator: write `col ~ 'pattern'` for a regular expression match (`~*` ignores case; `!~` and `!~*` for NOT)"
        );
        assert_eq!(
            clean_sql_error(
                "This feature is not implemented: Unsupported ast node in sqltorel: Prior(Identifier(Ident { value: \"x\" }))"
            ),
            "DataFusion's SQL does not support this construct (`Prior` in its parser's terms): write it another way"
        );
        for (written, instead) in [
            ("INT64", "BIGINT"),
            ("NUMBER(10)", "BIGINT"),
            ("NUMBER(10,2)", "DECIMAL(p, s) (`DECIMAL(18, 2)`) or DOUBLE"),
            ("NVARCHAR(50)", "VARCHAR"),
            ("DATETIME2", "TIMESTAMP"),
            ("BIT", "BOOLEAN"),
            (
                "GEOGRAPHY",
                "one of its types: BIGINT, INT, DOUBLE, DECIMAL(p, s), VARCHAR, BOOLEAN, DATE, TIMESTAMP",
            ),
        ] {
            assert_eq!(
                clean_sql_error(&format!(
                    "This feature is not implemented: Unsupported SQL type {written}"
                )),
                format!("DataFusion's SQL has no type `{written}`: write {instead}")
            );
        }
        assert_eq!(
            bracketed_name("SELECT * FROM p WHERE [first_name] = 'Ada'").as_deref(),
            Some("first_name")
        );
        assert_eq!(bracketed_name("SELECT tags[1] FROM p WHERE x = 1"), None);
        assert_eq!(bracketed_name("SELECT * FROM p WHERE f(x)[1] = 2"), None);
        assert!(
            clean_sql_error("This feature is not implemented: TOP")
                .starts_with("DataFusion's SQL has no `TOP n`: a segment selects every member")
        );
        assert_eq!(
            clean_sql_error(
                "type_coercion\ncaused by\nError during planning: Cannot infer common argument type for comparison operation Boolean = Int64"
            ),
            "true/false values are compared (=) with Int64 values: a true/false column is a condition by itself (`WHERE is_subscribed`, `WHERE NOT is_subscribed`); compare it with `true` or `false`, not with a number or a text"
        );
        assert_eq!(
            clean_sql_error(
                "Invalid regex\ncaused by\nExternal error: regex parse error:\n    [\n    ^\nerror: unclosed character class"
            ),
            "the regular expression `[` is not valid: unclosed character class (the syntax is Rust's regex crate's: https://docs.rs/regex/latest/regex/#syntax)"
        );
        // A name no dialect has keeps DataFusion's guess.
        assert_eq!(
            clean_sql_error(
                "Error during planning: Invalid function 'lenght'.\nDid you mean 'length'?"
            ),
            "Invalid function 'lenght'.\nDid you mean 'length'?"
        );
    }

    #[test]
    fn a_text_that_is_not_a_number_says_what_to_compare() {
        assert_eq!(
            clean_sql_error(
                "Arrow error: Cast error: Cannot cast string 'twenty' to value of Int64 type"
            ),
            "Cast error: Cannot cast string 'twenty' to value of Int64 type: a text in quotes meets whole numbers (a column compared with it, say), and is not one; compare with a value of their kind, or cast the column to text (`CAST(col AS VARCHAR) = '...'`); partition folders' values read as whole numbers or dates when every folder's value is one"
        );
        let other = "Cast error: Cannot cast string 'x' to value of Utf8View type";
        assert_eq!(clean_sql_error(other), other);
    }

    #[test]
    fn a_function_given_values_it_does_not_take_says_its_forms_not_a_bug() {
        let datafusion = "type_coercion\ncaused by\nError during planning: Internal error: Function 'md5' failed to match any signature, errors: Error during planning: Function 'md5' requires String, but received Int64 (DataType: Int64).,Error during planning: Function 'md5' requires Binary, but received Int64 (DataType: Int64)..\nThis issue was likely caused by a bug in DataFusion's code. Please help us to resolve this by filing a bug report in our issue tracker: https://github.com/apache/datafusion/issues. No function matches the given name and argument types 'md5(Int64)'. You might need to add explicit type casts.\n\tCandidate functions:\n\tmd5(String)\n\tmd5(Binary)";
        assert_eq!(
            clean_sql_error(datafusion),
            "no form of `md5` takes (Int64): it takes md5(String) or md5(Binary); cast the values to a type it takes (`CAST(col AS VARCHAR)` makes text, `CAST(col AS BIGINT)` a whole number)"
        );
        // A function with checks of its own says why.
        let datafusion = "Execution error: Function 'concat_ws' user-defined coercion failed with: Error during planning: concat_ws expects at least 2 arguments, got 1. No function matches the given name and argument types 'concat_ws(Int64)'. You might need to add explicit type casts.\n\tCandidate functions:\n\tconcat_ws(UserDefined)";
        assert_eq!(
            clean_sql_error(datafusion),
            "no form of `concat_ws` takes (Int64): concat_ws expects at least 2 arguments, got 1"
        );
    }

    #[test]
    fn a_text_in_double_quotes_is_said_to_name_a_column() {
        let message = "No field named \"Oslo\".\nValid fields are profiles.city.".to_owned();
        assert_eq!(
            quote_advice(
                message.clone(),
                "SELECT * FROM profiles WHERE city = \"Oslo\""
            ),
            "No field named \"Oslo\": double quotes name a column; a text goes in single quotes ('Oslo').\nValid fields are profiles.city."
        );
        // Not written in double quotes: a name, not a text.
        assert_eq!(
            quote_advice(message.clone(), "SELECT Oslo FROM profiles"),
            message
        );
    }

    #[test]
    fn accepts_queries() {
        assert!(check_query_only("SELECT * FROM t WHERE a > 1").is_ok());
        assert!(check_query_only("WITH x AS (SELECT 1) SELECT * FROM x").is_ok());
    }

    #[test]
    fn refuses_everything_else() {
        for (sql, found) in [
            ("CREATE TABLE t AS SELECT 1", "`CREATE TABLE T`"),
            ("DROP TABLE profiles", "`DROP TABLE PROFILES`"),
            ("INSERT INTO t VALUES (1)", "`INSERT INTO T`"),
            ("COPY profiles TO 'x.csv'", "`COPY PROFILES TO`"),
            ("SET datafusion.execution.batch_size = 1", "`SET`"),
            (
                "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 'x'",
                "`CREATE EXTERNAL TABLE`",
            ),
        ] {
            let err = check_query_only(sql).unwrap_err();
            assert!(
                err.contains("only a SELECT query") && err.contains(found),
                "{sql}: {err}"
            );
        }
        assert!(
            check_query_only("SELECT 1; SELECT 2")
                .unwrap_err()
                .contains("2 statements")
        );
        assert!(
            check_query_only("SELEC 1")
                .unwrap_err()
                .contains("syntax error")
        );
        // sqlparser's error type and its quoting left out.
        assert_eq!(
            check_query_only("SELECT * FROM t WHERE city = 'Val d'Or'").unwrap_err(),
            "SQL syntax error: Unterminated string literal at line 1, column 39: a single quote inside a text is written twice ('O''Brien')"
        );
    }

    #[test]
    fn a_column_named_in_another_case_gets_advice_the_file_can_follow() {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let columns = Schema::new(vec![
            Field::new("Email", DataType::Utf8, true),
            Field::new("LTV", DataType::Float64, true),
        ]);
        let schema = DFSchema::try_from_qualified_schema("profiles", &columns).unwrap();
        let error = schema.field_with_unqualified_name("ltv").unwrap_err();
        assert_eq!(
            clean_sql_error(&error.to_string()),
            "No field named ltv. Did you mean 'profiles.\"LTV\"'?\n\
             SQL reads a name without double quotes in lower case: write profiles.\"LTV\", \
             double quotes included.\n\
             Valid fields are profiles.\"Email\", profiles.\"LTV\"."
        );
    }
}
