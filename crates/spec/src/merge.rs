//! YAML merge keys (`<<: *name`) and top-level `x-` keys, applied to a file's text
//! without reading its scalars: each is written back as it was written (`2024.10` stays
//! `2024.10`, `007` stays `007`), so the typed read sees the values a file without merge
//! keys would give it. (serde_yaml's own `apply_merge` works on values, where a plain
//! `2024.10` has already become the number 2024.1.)

use std::collections::HashMap;
use std::fmt::Write;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::TScalarStyle;

#[derive(Debug, Clone)]
enum Node {
    Scalar {
        text: String,
        plain: bool,
        tag: Option<Tag>,
    },
    Sequence(Vec<Node>),
    Mapping(Vec<(Node, Node)>),
}

impl Node {
    fn scalar(&self) -> Option<&str> {
        match self {
            Node::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    fn is_merge_key(&self) -> bool {
        matches!(self, Node::Scalar { text, plain: true, tag: None } if text == "<<")
    }
}

/// Why a file could not be rewritten.
#[derive(Debug)]
pub(crate) enum Unmerged {
    /// A `<<` whose value is not a mapping or a list of mappings: what it found.
    BadMerge(String),
    /// Something this rewrite does not write back (a key that is a mapping, say) or a
    /// parse error: the caller reads the file another way.
    Unsupported,
}

/// The text of the file's first document with its merge keys applied and its top-level
/// `x-` keys left out. Aliases are copied as they are read: call it only on text that
/// serde_yaml has read as a value, whose limits on alias expansion and nesting then hold.
pub(crate) fn apply(text: &str) -> Result<String, Unmerged> {
    let mut root = read(text).ok_or(Unmerged::Unsupported)?;
    if let Node::Mapping(entries) = &mut root {
        entries.retain(|(k, _)| !k.scalar().is_some_and(|k| k.starts_with("x-")));
    }
    merge(&mut root)?;
    let mut out = String::with_capacity(text.len());
    match &root {
        Node::Scalar { .. } => return Err(Unmerged::Unsupported),
        node => write_value(node, 0, &mut out)?,
    }
    Ok(out.trim_start_matches([' ', '\n']).to_owned())
}

/// The first document as a tree, aliases replaced by copies of what they name.
fn read(text: &str) -> Option<Node> {
    enum Open {
        Sequence(usize, Vec<Node>),
        Mapping(usize, Vec<(Node, Node)>, Option<Node>),
    }
    let mut parser = Parser::new_from_str(text);
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut open: Vec<Open> = Vec::new();
    loop {
        let (node, anchor) = match parser.next_token().ok()?.0 {
            Event::StreamEnd => return None,
            Event::Scalar(text, style, anchor, tag) => {
                let plain = style == TScalarStyle::Plain;
                (Node::Scalar { text, plain, tag }, anchor)
            }
            Event::Alias(id) => (anchors.get(&id)?.clone(), 0),
            Event::SequenceStart(anchor, _) => {
                open.push(Open::Sequence(anchor, Vec::new()));
                continue;
            }
            Event::MappingStart(anchor, _) => {
                open.push(Open::Mapping(anchor, Vec::new(), None));
                continue;
            }
            Event::SequenceEnd => match open.pop()? {
                Open::Sequence(anchor, items) => (Node::Sequence(items), anchor),
                Open::Mapping(..) => return None,
            },
            Event::MappingEnd => match open.pop()? {
                Open::Mapping(anchor, entries, None) => (Node::Mapping(entries), anchor),
                _ => return None,
            },
            Event::Nothing | Event::StreamStart | Event::DocumentStart | Event::DocumentEnd => {
                continue;
            }
        };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match open.last_mut() {
            None => return Some(node),
            Some(Open::Sequence(_, items)) => items.push(node),
            Some(Open::Mapping(_, entries, key)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

/// Applies every merge key, innermost first: the keys written beside a `<<` win over the
/// merged ones, and of a list of merged mappings the first wins.
fn merge(node: &mut Node) -> Result<(), Unmerged> {
    match node {
        Node::Scalar { .. } => Ok(()),
        Node::Sequence(items) => items.iter_mut().try_for_each(merge),
        Node::Mapping(entries) => {
            for (_, value) in entries.iter_mut() {
                merge(value)?;
            }
            let (merges, mut own): (Vec<_>, Vec<_>) =
                entries.drain(..).partition(|(k, _)| k.is_merge_key());
            for (_, source) in merges {
                let mappings = match source {
                    Node::Mapping(m) => vec![m],
                    Node::Sequence(items) => items
                        .into_iter()
                        .map(|item| match item {
                            Node::Mapping(m) => Ok(m),
                            other => Err(found(&other)),
                        })
                        .collect::<Result<_, _>>()?,
                    other => return Err(found(&other)),
                };
                for (k, v) in mappings.into_iter().flatten() {
                    if !own.iter().any(|(o, _)| o.scalar() == k.scalar()) {
                        own.push((k, v));
                    }
                }
            }
            *entries = own;
            Ok(())
        }
    }
}

fn found(node: &Node) -> Unmerged {
    let what = match node {
        Node::Scalar { .. } => "scalar",
        Node::Sequence(_) => "sequence",
        Node::Mapping(_) => "mapping",
    };
    Unmerged::BadMerge(format!(
        "expected a mapping or list of mappings for merging, but found {what}"
    ))
}

/// Writes `node` as the value after `key:` or `-` at `indent`, in block style.
fn write_value(node: &Node, indent: usize, out: &mut String) -> Result<(), Unmerged> {
    match node {
        Node::Scalar { .. } => {
            out.push(' ');
            write_scalar(node, out)?;
            out.push('\n');
        }
        Node::Sequence(items) if items.is_empty() => out.push_str(" []\n"),
        Node::Mapping(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Node::Sequence(items) => {
            out.push('\n');
            for item in items {
                out.push_str(&" ".repeat(indent));
                out.push('-');
                write_value(item, indent + 2, out)?;
            }
        }
        Node::Mapping(entries) => {
            out.push('\n');
            for (key, value) in entries {
                out.push_str(&" ".repeat(indent));
                write_scalar(key, out)?;
                out.push(':');
                write_value(value, indent + 2, out)?;
            }
        }
    }
    Ok(())
}

/// A plain scalar as it was written (on one line, as the parser folded it); any other as a
/// double-quoted string of its value.
fn write_scalar(node: &Node, out: &mut String) -> Result<(), Unmerged> {
    let Node::Scalar { text, plain, tag } = node else {
        return Err(Unmerged::Unsupported);
    };
    let text_tag = tag
        .as_ref()
        .is_some_and(|t| t.handle == "tag:yaml.org,2002:" && t.suffix == "str");
    if let Some(tag) = tag.as_ref().filter(|_| !text_tag) {
        let _ = write!(out, "!<{}{}> ", tag.handle, tag.suffix);
    }
    if *plain && !text_tag && !text.contains('\n') {
        out.push_str(text);
    } else {
        let quoted = serde_json::to_string(text).map_err(|_| Unmerged::Unsupported)?;
        // Line breaks that YAML knows and JSON does not escape.
        out.push_str(
            &quoted
                .replace('\u{85}', "\\N")
                .replace('\u{2028}', "\\L")
                .replace('\u{2029}', "\\P"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Export {
        name: String,
        list: String,
        id: String,
        hex: String,
        quoted: String,
        sql: String,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        empty: Option<std::collections::BTreeMap<String, String>>,
        #[serde(default)]
        extra: Option<String>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        exports: Vec<Export>,
    }

    #[test]
    fn scalars_are_written_back_as_written() {
        let text = "x-base: &base\n  list: 2024.10\n  id: 007\n  hex: 0x1F\n  quoted: '1.10'\n  sql: |\n    SELECT 1\n    -- two\n\nexports:\n  - <<: *base\n    name: a\n    tags: [a, 'b c', \"\\u2028\"]\n  - name: b\n    <<: [*base, {extra: ~}]\n    list: own\n    empty: {}\n";
        let merged = apply(text).expect("rewritten");
        let file: File = serde_yaml::from_str(&merged).expect(&merged);
        let base = Export {
            name: "a".into(),
            list: "2024.10".into(),
            id: "007".into(),
            hex: "0x1F".into(),
            quoted: "1.10".into(),
            sql: "SELECT 1\n-- two\n".into(),
            tags: vec!["a".into(), "b c".into(), "\u{2028}".into()],
            empty: None,
            extra: None,
        };
        assert_eq!(file.exports[0], base);
        assert_eq!(
            file.exports[1],
            Export {
                name: "b".into(),
                list: "own".into(),
                tags: Vec::new(),
                empty: Some(Default::default()),
                ..base
            }
        );
    }

    #[test]
    fn a_merge_of_a_scalar_says_what_it_found() {
        let Err(Unmerged::BadMerge(message)) = apply("a:\n  <<: 5\n") else {
            panic!("expected a bad merge");
        };
        assert_eq!(
            message,
            "expected a mapping or list of mappings for merging, but found scalar"
        );
    }
}
