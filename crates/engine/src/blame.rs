//! Naming what failed: when an export's query fails on its data, a damaged file is looked
//! for among the sources' files, and each mapped field is computed alone, segment by
//! segment, until the one that fails is found.

use futures::StreamExt;

use crate::Engine;
use crate::plan::ExportQuery;
use crate::segments::query_only;

impl Engine {
    /// Which segment and mapped field fail on their own, when the export's query failed:
    /// each field's values are computed alone, segment by segment, until one fails.
    pub(crate) async fn blame(&self, query: &ExportQuery, message: &str) -> Option<String> {
        let unreadable = [
            "Parquet", "parquet", "corrupt", "snappy", "zstd", "gzip", "lz4",
        ];
        if unreadable.iter().any(|w| message.contains(w)) {
            for (name, source) in &self.pipeline.file.sources {
                let path = self.pipeline.resolve_path(&source.path);
                for file in crate::sources::list_files(&path).unwrap_or_default() {
                    if read_whole(&file).is_err() {
                        return Some(format!(
                            "source `{name}`, file {} cannot be read",
                            file.display()
                        ));
                    }
                }
            }
        }
        for probe in &query.probes {
            let failed = match self.ctx.sql_with_options(&probe.sql, query_only()).await {
                Ok(df) => match df.execute_stream().await {
                    Ok(mut stream) => {
                        let mut failed = false;
                        while let Some(batch) = stream.next().await {
                            if batch.is_err() {
                                failed = true;
                                break;
                            }
                        }
                        failed
                    }
                    Err(_) => true,
                },
                Err(_) => true,
            };
            if failed {
                return Some(format!("segment `{}`, {}", probe.segment, probe.field));
            }
        }
        None
    }
}

/// Decodes every page of a Parquet file.
fn read_whole(path: &std::path::Path) -> Result<(), String> {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?;
    for batch in reader {
        batch.map_err(|e| e.to_string())?;
    }
    Ok(())
}
