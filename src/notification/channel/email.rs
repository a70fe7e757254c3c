//! `kind = "email"`: one message per notification through an SMTP relay (STARTTLS unless
//! `starttls = false`), the one-line text as its subject and the body template as its text.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{
    Channel, ChannelConfig, Context, Delivered, DeliveryError, GroupContext, Problems, Templates,
};
use super::{done, need};

pub struct Email {
    host: String,
    port: Option<u16>,
    starttls: bool,
    from: Mailbox,
    to: Vec<Mailbox>,
    credentials: Option<(String, String)>,
    timeout: Duration,
}

impl Email {
    pub fn new(c: &ChannelConfig) -> Result<Email, Problems> {
        let mut p = Problems::new();
        let host = need(c, "smtp_host", &c.smtp_host, &mut p);
        let from = need(c, "from", &c.from, &mut p).and_then(|f| {
            f.parse::<Mailbox>()
                .map_err(|e| p.push(("from", format!("`{f}` is not an address: {e}"))))
                .ok()
        });
        if c.to.is_empty() {
            p.push(("to", "an email channel needs `to`".into()));
        }
        let mut to = Vec::new();
        for t in &c.to {
            match t.parse::<Mailbox>() {
                Ok(m) => to.push(m),
                Err(e) => p.push(("to", format!("`{t}` is not an address: {e}"))),
            }
        }
        let value = host.zip(from).map(|(host, from)| Email {
            host,
            port: c.smtp_port,
            starttls: c.starttls.unwrap_or(true),
            from,
            to,
            credentials: c
                .username
                .clone()
                .zip(c.password.as_ref().map(|p| p.0.clone())),
            timeout: c.timeout,
        });
        done(value, p)
    }

    fn message(&self, ctx: &Context<'_>, t: &Templates) -> Result<Message, DeliveryError> {
        let mut msg = Message::builder()
            .from(self.from.clone())
            .subject(ctx.text(t)?);
        for to in &self.to {
            msg = msg.to(to.clone());
        }
        msg.body(ctx.body(t)?)
            .map_err(|e| DeliveryError::Invalid(format!("cannot build the email: {e}")))
    }

    /// One email for a group: its title as the subject, a line per incident.
    fn group_message(&self, g: &GroupContext<'_>, t: &Templates) -> Result<Message, DeliveryError> {
        let mut msg = Message::builder()
            .from(self.from.clone())
            .subject(format!("[incidentd] {}", g.title()));
        for to in &self.to {
            msg = msg.to(to.clone());
        }
        let body: Vec<String> = g.lines(t)?.iter().map(|l| format!("- {l}")).collect();
        msg.body(format!("{}\n\n{}\n", g.title(), body.join("\n")))
            .map_err(|e| DeliveryError::Invalid(format!("cannot build the email: {e}")))
    }
}

#[async_trait::async_trait]
impl Channel for Email {
    async fn deliver(
        &self,
        ctx: &Context<'_>,
        t: &Templates,
        _: &reqwest::Client,
    ) -> Result<Delivered, DeliveryError> {
        self.send(self.message(ctx, t)?).await
    }

    async fn deliver_group(
        &self,
        g: &GroupContext<'_>,
        t: &Templates,
        _: &reqwest::Client,
    ) -> Result<Delivered, DeliveryError> {
        self.send(self.group_message(g, t)?).await
    }
}

impl Email {
    /// One message through the relay.
    async fn send(&self, msg: Message) -> Result<Delivered, DeliveryError> {
        let host = &self.host;
        let mut builder = if self.starttls {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| DeliveryError::Invalid(format!("smtp {host}: {e}")))?
        } else {
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        };
        if let Some(p) = self.port {
            builder = builder.port(p);
        }
        if let Some((u, p)) = &self.credentials {
            builder = builder.credentials(
                lettre::transport::smtp::authentication::Credentials::new(u.clone(), p.clone()),
            );
        }
        let mailer = builder.timeout(Some(self.timeout)).build();
        match mailer.send(msg).await {
            Ok(_) => Ok(Delivered::default()),
            // 5yz: the server refused it for good (a bad recipient, say).
            Err(e) if e.is_permanent() => Err(DeliveryError::Rejected {
                status: e
                    .status()
                    .and_then(|c| c.to_string().parse().ok())
                    .unwrap_or(550),
                excerpt: format!("smtp {host}: {e}"),
            }),
            Err(e) => Err(DeliveryError::Transient(format!("smtp {host}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;
    use crate::notification::NotifyEvent;

    #[test]
    fn addresses_are_checked_when_the_config_loads() {
        let bad = channel(
            "id = \"e\"\nkind = \"email\"\nsmtp_host = \"h\"\nfrom = \"not an address\"\nto = [\"ops@example.org\", \"@@\"]\n",
        );
        let Err(p) = Email::new(&bad) else {
            panic!("bad addresses accepted")
        };
        assert_eq!(
            p.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            ["from", "to"]
        );
        let good = channel(
            "id = \"e\"\nkind = \"email\"\nsmtp_host = \"h\"\nfrom = \"incidentd@example.org\"\nto = [\"ops@example.org\"]\n",
        );
        let e = Email::new(&good).unwrap();
        let inc = incident();
        let msg = e
            .message(&ctx(&inc, &good, NotifyEvent::Opened), &templates())
            .unwrap();
        let text = String::from_utf8(msg.formatted()).unwrap();
        assert!(text.contains("Subject: [sev2] opened: #7"), "{text}");
    }
}
