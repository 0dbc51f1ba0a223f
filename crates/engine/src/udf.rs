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

/// The rules as functions: `sg_email`, `sg_email_problem`, `sg_email_flaw`,
/// `sg_alternate_emails`, `sg_alternate_email_count` and `sg_date`. A cluster's scheduler
/// and executors register them too.
pub fn contact_rules() -> Vec<ScalarUDF> {
    [
        Function::Email,
        Function::EmailProblem,
        Function::EmailFlaw,
        Function::Alternates,
        Function::AlternateCount,
        Function::Date,
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
    /// What is wrong with a normalised email that is not valid, or null.
    EmailFlaw,
    /// Normalised, valid, distinct alternate emails, at most five.
    Alternates,
    /// How many valid distinct alternate emails there are.
    AlternateCount,
    /// A date or a time as SendGrid's Date fields take it (ISO 8601): a date at midnight
    /// UTC, a time without a zone as UTC, a time with a zone in its zone. DataFusion's
    /// `to_char` casts a zoned time of any unit to nanoseconds first, which fails on the
    /// `0001-01-01` and `9999-12-31` that tables use for "never".
    Date,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ContactRule {
    function: Function,
    signature: Signature,
}

impl ContactRule {
    fn new(function: Function) -> Self {
        let signature = match function {
            Function::Email | Function::EmailProblem | Function::EmailFlaw => {
                Signature::string(1, Volatility::Immutable)
            }
            Function::Alternates | Function::AlternateCount | Function::Date => {
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
            Function::EmailFlaw => "sg_email_flaw",
            Function::Alternates => "sg_alternate_emails",
            Function::AlternateCount => "sg_alternate_email_count",
            Function::Date => "sg_date",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match self.function {
            Function::Email | Function::EmailProblem | Function::EmailFlaw => Ok(DataType::Utf8),
            Function::Date => match &args[0] {
                DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => Ok(DataType::Utf8),
                other => exec_err!("sg_date takes a date or a time, not {other}"),
            },
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
            Function::EmailFlaw => {
                let strings = cast(&input, &DataType::Utf8)?;
                let strings = strings.as_string::<i32>();
                let mut out = StringBuilder::with_capacity(strings.len(), 0);
                for v in strings.iter() {
                    match v.and_then(crate::rules::email_flaw) {
                        Some(flaw) => out.append_value(flaw),
                        None => out.append_null(),
                    }
                }
                Arc::new(out.finish())
            }
            Function::Date => Arc::new(sendgrid_dates(&input)?),
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

/// The [`Function::Date`] values, written by Arrow's formatter as `to_char` writes them,
/// for every unit and every year from 0001 to 9999; null outside them.
fn sendgrid_dates(input: &ArrayRef) -> Result<arrow::array::StringArray> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let format = match input.data_type() {
        DataType::Date32 | DataType::Date64 => "%Y-%m-%dT00:00:00Z",
        DataType::Timestamp(_, None) => "%Y-%m-%dT%H:%M:%SZ",
        DataType::Timestamp(_, Some(_)) => "%Y-%m-%dT%H:%M:%S%:z",
        other => return exec_err!("sg_date takes a date or a time, not {other}"),
    };
    let options = FormatOptions::new()
        .with_date_format(Some(format))
        .with_datetime_format(Some(format))
        .with_timestamp_format(Some(format))
        .with_timestamp_tz_format(Some(format));
    let formatter = ArrayFormatter::try_new(input.as_ref(), &options)?;
    let mut out = StringBuilder::with_capacity(input.len(), input.len() * format.len());
    let mut written = String::new();
    for i in 0..input.len() {
        written.clear();
        if !input.is_null(i) {
            formatter.value(i).write(&mut written)?;
        }
        // A year outside 0001-9999 is year 0000 or written with a sign (`+10000-01-01`),
        // forms ISO 8601 leaves to agreement and SendGrid is not documented to take: like a
        // float's NaN, it is not sent, so SendGrid keeps what it has and the contact is not
        // refused.
        if written.is_empty() || written.starts_with(['+', '-']) || written.starts_with("0000") {
            out.append_null();
        } else {
            out.append_value(&written);
        }
    }
    Ok(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, StringArray, TimestampMicrosecondArray, TimestampSecondArray};

    fn dates(input: ArrayRef) -> Vec<Option<String>> {
        let out: StringArray = sendgrid_dates(&input).unwrap();
        out.iter().map(|v| v.map(str::to_owned)).collect()
    }

    #[test]
    fn dates_and_times_of_every_unit_and_year() {
        // 0001-01-01, 1970-01-01 and 9999-12-31.
        let days = Date32Array::from(vec![Some(-719_162), Some(0), None, Some(2_932_896)]);
        assert_eq!(
            dates(Arc::new(days)),
            [
                Some("0001-01-01T00:00:00Z".to_owned()),
                Some("1970-01-01T00:00:00Z".to_owned()),
                None,
                Some("9999-12-31T00:00:00Z".to_owned()),
            ]
        );
        // 9999-12-31T00:00:00 and 0001-01-01T00:00:00, far outside nanoseconds' range.
        let micros = vec![253_402_214_400_000_000, -62_135_596_800_000_000];
        let naive = TimestampMicrosecondArray::from(micros.clone());
        assert_eq!(
            dates(Arc::new(naive)),
            [
                Some("9999-12-31T00:00:00Z".to_owned()),
                Some("0001-01-01T00:00:00Z".to_owned()),
            ]
        );
        let zoned = TimestampMicrosecondArray::from(micros).with_timezone("+05:30");
        assert_eq!(
            dates(Arc::new(zoned)),
            [
                Some("9999-12-31T05:30:00+05:30".to_owned()),
                Some("0001-01-01T05:30:00+05:30".to_owned()),
            ]
        );
        // Past 9999-12-31 and before 0001-01-01, in the zone the value is written in: not sent.
        let far = vec![253_402_300_799, 253_402_300_800, -62_135_596_801];
        let far = TimestampSecondArray::from(far);
        assert_eq!(
            dates(Arc::new(far.clone())),
            [Some("9999-12-31T23:59:59Z".to_owned()), None, None]
        );
        assert_eq!(
            dates(Arc::new(far.with_timezone("+01:00"))),
            [None, None, Some("0001-01-01T00:59:59+01:00".to_owned())]
        );
        let days = Date32Array::from(vec![-719_163, 2_932_897]);
        assert_eq!(dates(Arc::new(days)), [None, None]);
        let seconds = TimestampSecondArray::from(vec![1_700_000_000]).with_timezone("UTC");
        assert_eq!(
            dates(Arc::new(seconds)),
            [Some("2023-11-14T22:13:20+00:00".to_owned())]
        );
    }
}
