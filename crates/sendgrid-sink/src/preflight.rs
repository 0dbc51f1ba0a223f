//! Before the first upload: the export's lists exist, and its custom field names resolve to
//! this account's field ids (created when the export allows it). Nothing is sent before this.

use std::collections::BTreeMap;

use pipeline_sink::{ContactField, ExportTarget, FieldKind, SinkError};
use sendgrid_client::FieldType;

use crate::{SendgridSink, sink_error};

impl SendgridSink {
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
        let mut ids: BTreeMap<String, String> = self
            .client
            .field_definitions()
            .await
            .map_err(sink_error)?
            .custom_fields
            .into_iter()
            .map(|d| (d.name, d.id))
            .collect();
        let missing: Vec<&str> = custom
            .iter()
            .filter(|f| !ids.contains_key(&f.name))
            .map(|f| f.name.as_str())
            .collect();
        if !missing.is_empty() && !self.settings.create_missing_fields {
            return Err(SinkError::Config(format!(
                "custom field(s) {} do not exist in this SendGrid account: create them, or set create_missing_fields: true on export `{}`",
                missing.join(", "),
                target.export
            )));
        }
        for name in missing {
            let field_type = self
                .custom_types
                .get(name)
                .copied()
                .unwrap_or(FieldType::Text);
            let created = self
                .client
                .create_field(name, field_type)
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
