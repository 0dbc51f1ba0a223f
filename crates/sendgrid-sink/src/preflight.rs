//! Before the first upload: the export's lists exist, and its custom field names resolve to
//! this account's field ids (created when the export allows it). Nothing is sent before this.

use std::collections::BTreeMap;

use pipeline_sink::{ContactField, ExportTarget, FieldKind, SinkError};
use sendgrid_client::{FieldDefinition, FieldType};

use crate::{SendgridSink, sink_error};

/// The account's definition of custom field `name`. SendGrid's field names are unique
/// whatever their case, so `lifetime_value` finds `Lifetime_Value`.
pub fn find_field<'a>(defs: &'a [FieldDefinition], name: &str) -> Option<&'a FieldDefinition> {
    defs.iter().find(|d| d.name.eq_ignore_ascii_case(name))
}

/// Why a value of type `ours` cannot fill the account's field `def`, if it cannot.
pub fn type_mismatch(def: &FieldDefinition, ours: FieldType) -> Option<String> {
    if def.field_type == ours {
        return None;
    }
    let value = match ours {
        FieldType::Text => "text",
        FieldType::Number => "a number",
        FieldType::Date => "a date or timestamp",
    };
    let cast = match def.field_type {
        FieldType::Text => "VARCHAR",
        FieldType::Number => "DOUBLE",
        FieldType::Date => "DATE",
    };
    Some(format!(
        "custom field {} is a {:?} field in SendGrid, but its mapped value is {value}: map CAST(<expression> AS {cast}) instead",
        def.name, def.field_type
    ))
}

impl SendgridSink {
    /// The SendGrid type the planned value of custom field `name` fills.
    fn custom_type(&self, name: &str) -> FieldType {
        self.custom_types
            .get(name)
            .copied()
            .unwrap_or(FieldType::Text)
    }

    /// The export's fields with custom field names replaced by their ids.
    pub(crate) async fn preflight(
        &self,
        target: &ExportTarget,
    ) -> Result<Vec<ContactField>, SinkError> {
        for id in &target.list_ids {
            if self
                .client
                .get_list(id)
                .await
                .map_err(sink_error)?
                .is_none()
            {
                return Err(SinkError::Config(format!(
                    "list {id} does not exist in this SendGrid account: create it, or fix list_ids of export `{}`",
                    target.export
                )));
            }
        }
        let custom: Vec<&ContactField> = target
            .fields
            .iter()
            .filter(|f| f.kind == FieldKind::Custom)
            .collect();
        if custom.is_empty() {
            return Ok(target.fields.clone());
        }
        let defs = self
            .client
            .field_definitions()
            .await
            .map_err(sink_error)?
            .custom_fields;
        let mut ids: BTreeMap<String, String> = BTreeMap::new();
        let mut missing = Vec::new();
        let mut mismatched = Vec::new();
        for field in custom {
            let ours = self.custom_type(&field.name);
            match find_field(&defs, &field.name) {
                Some(def) => match type_mismatch(def, ours) {
                    Some(why) => mismatched.push(why),
                    None => {
                        ids.insert(field.name.clone(), def.id.clone());
                    }
                },
                None => missing.push(field.name.as_str()),
            }
        }
        if !mismatched.is_empty() {
            return Err(SinkError::Config(format!(
                "export `{}`: {}",
                target.export,
                mismatched.join("; ")
            )));
        }
        if !missing.is_empty() && !self.settings.create_missing_fields {
            return Err(SinkError::Config(format!(
                "custom field(s) {} do not exist in this SendGrid account: create them, or set create_missing_fields: true on export `{}`",
                missing.join(", "),
                target.export
            )));
        }
        for name in missing {
            let created = self
                .client
                .create_field(name, self.custom_type(name))
                .await
                .map_err(sink_error)?;
            tracing::info!(field = name, id = %created.id, "Created custom field");
            ids.insert(name.to_owned(), created.id);
        }
        Ok(target
            .fields
            .iter()
            .map(|f| match f.kind {
                FieldKind::Reserved => f.clone(),
                FieldKind::Custom => ContactField {
                    name: ids[&f.name].clone(),
                    kind: FieldKind::Custom,
                },
            })
            .collect())
    }
}
