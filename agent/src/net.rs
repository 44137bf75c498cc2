//! The guest's network: `lo` up, and `eth0` (virtio-net) with the static address and default
//! route from the measured command line, set through rtnetlink. There is no DHCP and no DNS: the
//! network belongs to the host, so the guest takes nothing from it; what travels over it is
//! authenticated by the key broker's protocol (evidence, JWE to the guest's own key) and by
//! digests.

use std::time::Duration;

use futures::TryStreamExt as _;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use thiserror::Error;
use tracing::info;

use crate::config::NetConfig;

/// The loopback interface.
const LOOPBACK: &str = "lo";
/// The one interface the launcher gives the guest.
pub const GUEST_INTERFACE: &str = "eth0";
/// How long the agent waits for `eth0` to appear after its driver was loaded.
const INTERFACE_WAIT: Duration = Duration::from_secs(5);

/// Setting up the network failed.
#[derive(Debug, Error)]
pub enum NetError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket")]
    Socket(#[source] std::io::Error),
    /// The interface did not appear (no virtio-net device, or its driver is missing).
    #[error("network interface {0} did not appear within {INTERFACE_WAIT:?}")]
    NoInterface(&'static str),
    /// A netlink request failed.
    #[error("cannot {what} on {interface}")]
    Netlink {
        /// The step.
        what: &'static str,
        /// The interface.
        interface: &'static str,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
}

/// Brings `lo` up, then `eth0` with `config`'s address and default route.
pub async fn bring_up(config: &NetConfig) -> Result<(), NetError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetError::Socket)?;
    let connection = tokio::spawn(connection);
    let result = configure(&handle, config).await;
    connection.abort();
    result
}

async fn configure(handle: &Handle, config: &NetConfig) -> Result<(), NetError> {
    let lo = index_of(handle, LOOPBACK, Duration::ZERO).await?;
    set_up(handle, lo, LOOPBACK).await?;
    let eth = index_of(handle, GUEST_INTERFACE, INTERFACE_WAIT).await?;
    let netlink = |what| {
        move |source| NetError::Netlink {
            what,
            interface: GUEST_INTERFACE,
            source,
        }
    };
    handle
        .address()
        .add(eth, config.address.into(), config.prefix)
        .execute()
        .await
        .map_err(netlink("add the address"))?;
    set_up(handle, eth, GUEST_INTERFACE).await?;
    if let Some(gateway) = config.gateway {
        let route = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .output_interface(eth)
            .gateway(gateway)
            .build();
        handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(netlink("add the default route"))?;
    }
    info!(
        interface = GUEST_INTERFACE,
        address = %config.address,
        prefix = config.prefix,
        gateway = ?config.gateway,
        "network up"
    );
    Ok(())
}

async fn set_up(handle: &Handle, index: u32, interface: &'static str) -> Result<(), NetError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|source| NetError::Netlink {
            what: "bring the link up",
            interface,
            source,
        })
}

/// The index of `name`, polling for up to `wait` (a driver probes its device asynchronously).
async fn index_of(handle: &Handle, name: &'static str, wait: Duration) -> Result<u32, NetError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut links = handle.link().get().match_name(name.to_owned()).execute();
        match links.try_next().await {
            Ok(Some(link)) => return Ok(link.header.index),
            // ENODEV: not there (yet).
            Ok(None) | Err(rtnetlink::Error::NetlinkError(_))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(None) | Err(rtnetlink::Error::NetlinkError(_)) => {
                return Err(NetError::NoInterface(name));
            }
            Err(source) => {
                return Err(NetError::Netlink {
                    what: "look up the link",
                    interface: name,
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_absent_interface_is_reported_by_name_after_the_wait() {
        // Reading links needs no privilege; this interface name cannot exist (15 chars max).
        let (connection, handle, _) = rtnetlink::new_connection().unwrap();
        let connection = tokio::spawn(connection);
        let started = std::time::Instant::now();
        let err = index_of(&handle, "tsuba-nosuchif", Duration::from_millis(200))
            .await
            .unwrap_err();
        connection.abort();
        assert!(
            matches!(err, NetError::NoInterface("tsuba-nosuchif")),
            "{err}"
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn loopback_is_found() {
        let (connection, handle, _) = rtnetlink::new_connection().unwrap();
        let connection = tokio::spawn(connection);
        let index = index_of(&handle, LOOPBACK, Duration::ZERO).await.unwrap();
        connection.abort();
        assert_eq!(index, 1, "lo is always the first interface of a namespace");
    }
}
