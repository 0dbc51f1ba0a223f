//! The contact rules as DataFusion scalar functions, so selection, validation and dedupe
//! run inside one query plan whose memory DataFusion bounds and spills.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Builder, ListBuilder, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use crate::rules::{MAX_ALTERNATE_EMAILS, email_problem, normalize_email_into};

/// The rules as functions: `sg_email`, `sg_email_problem`, `sg_alternate_emails` and
/// `sg_alternate_email_count`. A cluster's scheduler and executors register them too.
pub fn contact_rules() -> Vec<ScalarUDF> {
    [
        Function::Email,
        Function::EmailProblem,
        Function::Alternates,
        Function::AlternateCount,
    ]
    .into_iter()
    .map(|f| ScalarUDF::from(ContactRule::new(f)))
    .collect()
}

/// Registers the [`contact_rules`] on a session.
pub fn register(ctx: &SessionContext) {
    for f in contact_rules() {
        ctx.register_udf(f);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Function {
    /// Trimmed, lower-cased email.
    Email,
    /// The reject reason code of a normalised email, or null.
    EmailProblem,
    /// Normalised, valid, distinct alternate emails, at most five.
    Alternates,
    /// How many valid distinct alternate emails there are.
    AlternateCount,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ContactRule {
    function: Function,
    signature: Signature,
}

impl ContactRule {
    fn new(function: Function) -> Self {
        let signature = match function {
            Function::Email | Function::EmailProblem => Signature::string(1, Volatility::Immutable),
            Function::Alternates | Function::AlternateCount => {
                Signature::any(1, Volatility::Immutable)
            }
        };
        Self {
            function,
            signature,
        }
    }
}

fn utf8_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

impl ScalarUDFImpl for ContactRule {
    fn name(&self) -> &str {
        match self.function {
            Function::Email => "sg_email",
            Function::EmailProblem => "sg_email_problem",
            Function::Alternates => "sg_alternate_emails",
            Function::AlternateCount => "sg_alternate_email_count",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match self.function {
            Function::Email | Function::EmailProblem => Ok(DataType::Utf8),
            Function::Alternates | Function::AlternateCount => match &args[0] {
                DataType::List(f) | DataType::LargeList(f)
                    if matches!(
                        f.data_type(),
                        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
                    ) =>
                {
                    Ok(if self.function == Function::Alternates {
                        utf8_list()
                    } else {
                        DataType::Int64
                    })
                }
                other => exec_err!("{} takes a list of strings, not {other}", self.name()),
            },
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let input = args.args[0].to_array(args.number_rows)?;
        let out: ArrayRef = match self.function {
            Function::Email => {
                let strings = cast(&input, &DataType::Utf8)?;
                let strings = strings.as_string::<i32>();
                let mut out =
                    StringBuilder::with_capacity(strings.len(), strings.value_data().len());
                let mut buf = String::new();
                for v in strings.iter() {
                    match v {
                        Some(raw) => {
                            normalize_email_into(raw, &mut buf);
                            out.append_value(&buf);
                        }
                        None => out.append_null(),
                    }
                }
                Arc::new(out.finish())
            }
            Function::EmailProblem => {
                let strings = cast(&input, &DataType::Utf8)?;
                let strings = strings.as_string::<i32>();
                let mut out = StringBuilder::with_capacity(strings.len(), 0);
                for v in strings.iter() {
                    match v.map_or(
                        Some(crate::rules::RejectReason::MissingEmail),
                        email_problem,
                    ) {
                        Some(reason) => out.append_value(reason.code()),
                        None => out.append_null(),
                    }
                }
                Arc::new(out.finish())
            }
            Function::Alternates | Function::AlternateCount => {
                let lists = cast(&input, &utf8_list())?;
                let lists = lists.as_list::<i32>();
                let mut builder = ListBuilder::new(StringBuilder::new());
                let mut counts = Int64Builder::with_capacity(lists.len());
                let mut kept: Vec<String> = Vec::new();
                let mut buf = String::new();
                for i in 0..lists.len() {
                    if lists.is_null(i) {
                        builder.append(false);
                        counts.append_null();
                        continue;
                    }
                    kept.clear();
                    let values = lists.value(i);
                    for raw in values.as_string::<i32>().iter().flatten() {
                        normalize_email_into(raw, &mut buf);
                        if email_problem(&buf).is_none() && !kept.contains(&buf) {
                            kept.push(buf.clone());
                        }
                    }
                    counts.append_value(kept.len() as i64);
                    if kept.is_empty() {
                        builder.append(false);
                    } else {
                        for e in kept.iter().take(MAX_ALTERNATE_EMAILS) {
                            builder.values().append_value(e);
                        }
                        builder.append(true);
                    }
                }
                if self.function == Function::Alternates {
                    Arc::new(builder.finish())
                } else {
                    Arc::new(counts.finish())
                }
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}
