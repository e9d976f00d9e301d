//! Trust-on-first-use host key pins kept in the database, so every replica
//! trusts the same keys. Adapts `store` to the SSH layer's `PinStore`.

use russh::keys::{Algorithm, PublicKey};

use crate::ssh::hostkey::{BoxFuture, PinOutcome, PinStore, fingerprint};
use crate::ssh::known_hosts;
use crate::store::{Pin, Store};

pub struct DatabasePins {
    store: Store,
}

impl DatabasePins {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl PinStore for DatabasePins {
    fn pin<'a>(
        &'a self,
        host: &'a str,
        port: u16,
        key: &'a PublicKey,
    ) -> BoxFuture<'a, Result<PinOutcome, String>> {
        Box::pin(async move {
            let line = known_hosts::openssh_key(key);
            let algorithm = key.algorithm();
            match self
                .store
                .pin_host_key(host, port, algorithm.as_str(), &line, &fingerprint(key))
                .await
            {
                Ok(Pin::Pinned) => Ok(PinOutcome::Pinned),
                Ok(Pin::Matches) => Ok(PinOutcome::Matches),
                Ok(Pin::Differs { fingerprint }) => Ok(PinOutcome::Differs {
                    known: vec![fingerprint],
                    source: "the pin in table ssh_host_keys".into(),
                }),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn pinned_algorithms<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, Vec<Algorithm>> {
        Box::pin(async move {
            match self.store.pinned_algorithm(host, port).await {
                Ok(Some(name)) => name.parse().ok().into_iter().collect(),
                _ => Vec::new(),
            }
        })
    }
}
