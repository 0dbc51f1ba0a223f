//! `${VAR}` references in string values, read from the environment.
//!
//! `$${` writes a literal `${`. The API key is deliberately not interpolated here: it
//! stays a reference until [`crate::resolve_api_key`] reads it, so it never sits in the
//! parsed pipeline.

use crate::error::Diagnostic;
use crate::model::PipelineFile;

/// One `${NAME}` replaced by a value from the environment, and where.
#[derive(Debug, Clone)]
pub(crate) struct Substitution {
    /// The field path of the value it went into.
    pub path: String,
    pub name: String,
    pub value: String,
}

/// Replaces `${VAR}` references in every string value that may hold one; returns the
/// problems and every substitution made.
pub(crate) fn interpolate(
    file: &mut PipelineFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Vec<Diagnostic>, Vec<Substitution>) {
    let mut diagnostics = Vec::new();
    let mut substitutions = Vec::new();
    let mut apply = |path: String, value: &mut String, text: Text| {
        let mut used = Vec::new();
        match expand_recording(value, env, &mut used, text) {
            Ok(expanded) => *value = expanded,
            Err(message) => diagnostics.push(Diagnostic::new(path.clone(), message)),
        }
        substitutions.extend(used.into_iter().map(|(name, value)| Substitution {
            path: path.clone(),
            name,
            value,
        }));
    };
    for (name, connection) in &mut file.connections {
        for (field, value) in [
            ("display_name", &mut connection.display_name),
            ("endpoint", &mut connection.endpoint),
            ("api_key_file", &mut connection.api_key_file),
        ] {
            if let Some(v) = value.as_mut() {
                apply(format!("connections.{name}.{field}"), v, Text::Plain);
            }
        }
    }
    if let Some(dir) = file.state_dir.as_mut() {
        apply("state_dir".into(), dir, Text::Plain);
    }
    for (key, value) in &mut file.state_storage {
        if let crate::StorageValue::Text(text) = value {
            apply(format!("state_storage.{key}"), text, Text::Plain);
        }
    }
    for (name, source) in &mut file.sources {
        apply(
            format!("sources.{name}.path"),
            &mut source.path,
            Text::Plain,
        );
        for (key, value) in &mut source.storage {
            if let crate::StorageValue::Text(text) = value {
                apply(format!("sources.{name}.storage.{key}"), text, Text::Plain);
            }
        }
    }
    for (name, query) in &mut file.segments {
        apply(format!("segments.{name}"), query, Text::Sql);
    }
    for (i, export) in file.exports.iter_mut().enumerate() {
        for (j, id) in export.list_ids.iter_mut().enumerate() {
            apply(format!("exports[{i}].list_ids[{j}]"), id, Text::Plain);
        }
        for (j, list) in export.lists.iter_mut().enumerate() {
            apply(
                format!("exports[{i}].lists[{j}].name"),
                &mut list.name,
                Text::Plain,
            );
        }
        for (j, expr) in export.order_by.iter_mut().enumerate() {
            apply(format!("exports[{i}].order_by[{j}]"), expr, Text::Sql);
        }
        for (field, expr) in export.mapping.expressions_mut() {
            apply(format!("exports[{i}].mapping.{field}"), expr, Text::Sql);
        }
    }
    (diagnostics, substitutions)
}

/// What a value is, for what a reference's text becomes in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Text {
    /// A name, a path, a setting: the variable's text as it is.
    Plain,
    /// SQL: inside a quoted string (`'…'`) or quoted name (`"…"`), the variable's text
    /// is that string's text, its quotes doubled, so a value cannot end the string and
    /// change the query (`city = '${CITY}'` with `Val d'Or`).
    Sql,
}

/// Where SQL text is: outside quotes, in a string, in a quoted name or in a `--` comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SqlPlace {
    Code,
    Quoted(char),
    Comment,
}

impl SqlPlace {
    /// The place after `text`, read from this one.
    fn after(mut self, text: &str) -> SqlPlace {
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            self = match (self, c) {
                (SqlPlace::Code, '\'' | '"') => SqlPlace::Quoted(c),
                (SqlPlace::Code, '-') if chars.peek() == Some(&'-') => SqlPlace::Comment,
                (SqlPlace::Quoted(q), c) if c == q => SqlPlace::Code,
                (SqlPlace::Comment, '\n') => SqlPlace::Code,
                (place, _) => place,
            };
        }
        self
    }
}

/// Expands `${NAME}` references in `text`.
#[cfg(test)]
pub(crate) fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    expand_recording(text, env, &mut Vec::new(), Text::Plain)
}

/// Expands `${NAME}` references in `text`, recording each (name, value) used.
fn expand_recording(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    used: &mut Vec<(String, String)>,
    kind: Text,
) -> Result<String, String> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut place = SqlPlace::Code;
    // A reference's text as it goes in where it stands.
    let fill = |out: &mut String, place: SqlPlace, value: &str| match (kind, place) {
        (Text::Sql, SqlPlace::Quoted(q)) => {
            out.push_str(&value.replace(q, &format!("{q}{q}")));
        }
        _ => out.push_str(value),
    };
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        place = place.after(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(body) = after.strip_prefix("${") {
            let Some(end) = body.find('}') else {
                return Err("`${` without a closing `}`; write `$${` for a literal `${`".into());
            };
            let reference = &body[..end];
            let (name, default) = with_default(reference);
            if !is_var_name(name) {
                return Err(format!(
                    "`${{{reference}}}` is not a variable reference: names are letters, digits and `_`, not starting with a digit (`${{NAME:-default}}` gives a default)"
                ));
            }
            match (env(name), default) {
                (Some(value), Some(Fallback::WhenUnsetOrEmpty(default))) if value.is_empty() => {
                    out.push_str(default)
                }
                (Some(value), _) => {
                    fill(&mut out, place, &value);
                    used.push((name.to_owned(), value));
                }
                (
                    None,
                    Some(Fallback::WhenUnsetOrEmpty(default) | Fallback::WhenUnset(default)),
                ) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set; export it before running, write the value in the file, or give a default: `${{{name}:-value}}`"
                    ));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The text a reference stands for when its variable is not there, as a shell reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fallback<'a> {
    /// `${NAME:-text}`: when `NAME` is unset or empty.
    WhenUnsetOrEmpty(&'a str),
    /// `${NAME-text}`: when `NAME` is unset.
    WhenUnset(&'a str),
}

/// The name and the default of what is written between `${` and `}`. Anything after the
/// name other than a default is left in the name, which then is not a variable's name.
fn with_default(reference: &str) -> (&str, Option<Fallback<'_>>) {
    let end = reference
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(reference.len());
    let (name, rest) = reference.split_at(end);
    if rest.is_empty() {
        (name, None)
    } else if let Some(text) = rest.strip_prefix(":-") {
        (name, Some(Fallback::WhenUnsetOrEmpty(text)))
    } else if let Some(text) = rest.strip_prefix('-') {
        (name, Some(Fallback::WhenUnset(text)))
    } else {
        (reference, None)
    }
}

/// The variable named by a value written exactly `${NAME}`.
pub(crate) fn sole_reference(text: &str) -> Option<&str> {
    let name = text.trim().strip_prefix("${")?.strip_suffix('}')?;
    is_var_name(name).then_some(name)
}

/// An environment variable's name: a letter or `_`, then letters, digits and `_`.
pub(crate) fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "LIST").then(|| "abc".to_owned())
    }

    #[test]
    fn expands_references_and_escapes() {
        assert_eq!(expand("x-${LIST}-y", &env).unwrap(), "x-abc-y");
        assert_eq!(
            expand("$${LIST} costs $5", &env).unwrap(),
            "${LIST} costs $5"
        );
    }

    #[test]
    fn defaults_apply_as_in_a_shell() {
        let env = |name: &str| match name {
            "LIST" => Some("abc".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(expand("${LIST:-x}", &env).unwrap(), "abc");
        assert_eq!(expand("${LIST-x}", &env).unwrap(), "abc");
        assert_eq!(
            expand("${NOPE:-gold tier}/${NOPE-5}", &env).unwrap(),
            "gold tier/5"
        );
        assert_eq!(
            expand("[${EMPTY:-x}] [${EMPTY-x}]", &env).unwrap(),
            "[x] []"
        );
        assert_eq!(expand("${NOPE:-}", &env).unwrap(), "");
        let mut used = Vec::new();
        expand_recording("${LIST:-x} ${NOPE:-y}", &env, &mut used, Text::Plain).unwrap();
        assert_eq!(used, [("LIST".to_owned(), "abc".to_owned())]);
        assert_eq!(
            expand("${LIST:=x}", &env).unwrap_err(),
            "`${LIST:=x}` is not a variable reference: names are letters, digits and `_`, not starting with a digit (`${NAME:-default}` gives a default)"
        );
    }

    #[test]
    fn in_sql_a_value_inside_quotes_is_that_strings_text() {
        let env = |name: &str| match name {
            "CITY" => Some("Val d'Or".to_owned()),
            "SNEAK" => Some("x' OR 'a' = 'a".to_owned()),
            "COL" => Some("say \"hi\"".to_owned()),
            "MIN" => Some("5000".to_owned()),
            _ => None,
        };
        let sql = |text: &str| expand_recording(text, &env, &mut Vec::new(), Text::Sql).unwrap();
        assert_eq!(sql("city = '${CITY}'"), "city = 'Val d''Or'");
        assert_eq!(sql("tier = '${SNEAK}'"), "tier = 'x'' OR ''a'' = ''a'");
        assert_eq!(sql("SELECT \"${COL}\""), "SELECT \"say \"\"hi\"\"\"");
        // Outside quotes a value is SQL, as written; quotes doubled in the file stay
        // inside the string; a comment's apostrophe opens nothing.
        assert_eq!(
            sql("v > ${MIN} AND n = 'it''s ${CITY}'"),
            "v > 5000 AND n = 'it''s Val d''Or'"
        );
        assert_eq!(
            sql("v > ${MIN} -- don't\nAND c = '${CITY}' AND d = ${MIN}"),
            "v > 5000 -- don't\nAND c = 'Val d''Or' AND d = 5000"
        );
        // A default is written in the file, as it goes into the SQL.
        assert_eq!(sql("c = '${NOPE:-O''Neill}'"), "c = 'O''Neill'");
        // Anything else takes the text as it is.
        assert_eq!(
            expand_recording("'${CITY}'", &env, &mut Vec::new(), Text::Plain).unwrap(),
            "'Val d'Or'"
        );
    }

    #[test]
    fn missing_variable_is_named() {
        let err = expand("${NOPE}", &env).unwrap_err();
        assert!(
            err.contains("environment variable NOPE is not set"),
            "{err}"
        );
    }

    #[test]
    fn unclosed_reference_is_an_error() {
        assert!(
            expand("${LIST", &env)
                .unwrap_err()
                .contains("without a closing")
        );
    }

    #[test]
    fn sole_reference_only_accepts_a_whole_reference() {
        assert_eq!(
            sole_reference("${SENDGRID_API_KEY}"),
            Some("SENDGRID_API_KEY")
        );
        assert_eq!(sole_reference("SG.abc"), None);
        assert_eq!(sole_reference("x${A}"), None);
    }
}
