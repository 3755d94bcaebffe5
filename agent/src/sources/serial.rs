//! The `serial` source: a sensor's microcontroller streaming readings, one per line, in the
//! `jsonl` or `kv` format of [`ferry_shared::sensor_line`].

use std::sync::Arc;

use ferry_shared::RecordBody;
use ferry_shared::record::Unsequenced;
use ferry_shared::sensor_line::{self, LineFormat};

use super::SourceMetrics;
use super::edge_filter::EdgeFilter;
use super::line_source::LineHandler;
use super::port::Received;
use crate::config::SerialConfig;

pub struct SensorLines {
    format: LineFormat,
    sensor: String,
    filter: Option<EdgeFilter>,
    metrics: Arc<SourceMetrics>,
}

impl SensorLines {
    pub fn new(cfg: &SerialConfig, metrics: Arc<SourceMetrics>) -> Self {
        Self {
            format: cfg.format,
            sensor: cfg.sensor.clone(),
            filter: cfg.filter.as_ref().map(EdgeFilter::new),
            metrics,
        }
    }
}

impl LineHandler for SensorLines {
    fn line(&mut self, line: &[u8], at: Received) -> Result<Vec<Unsequenced>, &'static str> {
        let metrics = sensor_line::parse(self.format, line).map_err(|e| e.reason_code())?;
        let metrics = match &mut self.filter {
            Some(filter) => match filter.apply(metrics, at.instant) {
                Some(kept) => kept,
                None => {
                    SourceMetrics::bump(&self.metrics.filtered);
                    return Ok(Vec::new());
                }
            },
            None => metrics,
        };
        SourceMetrics::bump(&self.metrics.readings);
        Ok(vec![at.record(RecordBody::Reading {
            sensor: self.sensor.clone(),
            metrics,
        })])
    }
}
