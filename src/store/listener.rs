//! The one LISTEN connection a loop keeps: a dedicated, unpooled connection (a pool would drop
//! notifications) that subscribes to a few channels and forwards what it hears, and that
//! reconnects with [`Backoff::reconnect`] when it is lost. After every (re)subscription it
//! says [`Heard::Subscribed`], since notifications sent while it was away are gone: the loop
//! then looks at everything again.
//!
//! TCP keepalives are on: a connection that only receives would otherwise notice a dead peer
//! (a server that vanished from the network) only after hours.

use crate::backoff::{pause, Backoff};
use crate::store::describe_pg_error;
use crate::store::tls::Tls;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Config, Notification};
use tokio_util::sync::CancellationToken;

/// What the listener tells its loop.
#[derive(Debug)]
pub enum Heard {
    /// (Re)subscribed: notifications may have been missed before this.
    Subscribed,
    /// A notification on one of the channels.
    Notification(Notification),
}

/// A running LISTEN task; see the module documentation. Dropping it stops the task.
#[derive(Debug)]
pub struct Listener {
    heard: mpsc::UnboundedReceiver<Heard>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Listener {
    /// Starts listening on `channels` (plain identifiers, our own constants) with `config`,
    /// named `application_name` in `pg_stat_activity` unless the URL names it.
    pub fn spawn(
        config: &Config,
        tls: Tls,
        channels: &[&str],
        application_name: &str,
        shutdown: &CancellationToken,
    ) -> Listener {
        let mut config = config.clone();
        crate::store::keep_alive(&mut config);
        if config.get_application_name().is_none() {
            config.application_name(application_name);
        }
        let listen: String = channels.iter().map(|c| format!("LISTEN {c};")).collect();
        let (tx, heard) = mpsc::unbounded_channel();
        let stop = shutdown.child_token();
        let task = tokio::spawn(listen_loop(config, tls, listen, tx, stop.clone()));
        Listener { heard, stop, task }
    }

    /// The next thing heard; `None` once the listener has stopped.
    pub async fn recv(&mut self) -> Option<Heard> {
        self.heard.recv().await
    }

    /// What was heard already, without waiting.
    pub fn try_recv(&mut self) -> Option<Heard> {
        self.heard.try_recv().ok()
    }

    /// Stops the task and waits for it.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn listen_loop(
    config: Config,
    tls: Tls,
    listen: String,
    heard: mpsc::UnboundedSender<Heard>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::reconnect();
    loop {
        let subscribed = tokio::select! {
            _ = stop.cancelled() => return,
            s = subscribe(&config, &tls, &listen, heard.clone()) => s,
        };
        match subscribed {
            Ok((client, mut driver)) => {
                backoff.reset();
                if heard.send(Heard::Subscribed).is_err() {
                    driver.abort();
                    return;
                }
                tracing::debug!(channels = %listen, "listening");
                tokio::select! {
                    _ = stop.cancelled() => {
                        driver.abort();
                        return;
                    }
                    _ = &mut driver => {
                        tracing::warn!(channels = %listen, "lost the LISTEN connection; reconnecting");
                    }
                }
                drop(client);
            }
            Err(e) => {
                tracing::warn!(channels = %listen, error = %describe_pg_error(&e), "cannot LISTEN; retrying");
            }
        }
        if !pause(backoff.next_wait(), &stop).await {
            return;
        }
    }
}

/// Connects and LISTENs; the returned task drives the connection, forwarding notifications,
/// and ends when the connection does.
async fn subscribe(
    config: &Config,
    tls: &Tls,
    listen: &str,
    heard: mpsc::UnboundedSender<Heard>,
) -> Result<(tokio_postgres::Client, JoinHandle<()>), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if heard.send(Heard::Notification(n)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "the LISTEN connection failed");
                    return;
                }
            }
        }
    });
    if let Err(e) = client.batch_execute(listen).await {
        driver.abort();
        return Err(e);
    }
    Ok((client, driver))
}
