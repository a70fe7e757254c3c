//! `kind = "log"`: a structured line in the daemon's own log (target
//! `incidentd::notification`). Needs nothing; never fails.

use super::{Channel, Context, Delivered, DeliveryError, GroupContext, Templates};

pub struct Log;

#[async_trait::async_trait]
impl Channel for Log {
    async fn deliver(
        &self,
        ctx: &Context<'_>,
        _: &Templates,
        _: &reqwest::Client,
    ) -> Result<Delivered, DeliveryError> {
        tracing::info!(target: "incidentd::notification", channel = %ctx.channel.id,
            incident = ctx.incident.id, event = ctx.event.as_str(),
            severity = %ctx.incident.severity, status = %ctx.incident.status,
            title = %ctx.incident.title, "notification");
        Ok(Delivered::default())
    }

    async fn deliver_group(
        &self,
        g: &GroupContext<'_>,
        _: &Templates,
        _: &reqwest::Client,
    ) -> Result<Delivered, DeliveryError> {
        let ids: Vec<u64> = g.items.iter().map(|(_, i)| i.id).collect();
        tracing::info!(target: "incidentd::notification", channel = %g.channel.id,
            incidents = ?ids, group = %g.title(), "grouped notification");
        Ok(Delivered::default())
    }
}
