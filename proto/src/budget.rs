//! What one peer, and all peers together, may hold of a stateful service: streams (groups,
//! clients) and the units they carry (envs). A stream reserves its share when it is admitted
//! and gives it back when its guard drops, however the stream ends; what does not fit is
//! refused with RESOURCE_EXHAUSTED naming the setting, so one peer at its limit leaves room
//! for the others.

use crate::Refusal;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The caps, and the config keys that set them (named in refusals).
#[derive(Debug, Clone)]
pub struct Caps {
    pub streams_per_peer: (usize, &'static str),
    pub units_per_peer: (usize, &'static str),
    pub streams: (usize, &'static str),
    pub units: (usize, &'static str),
    /// What a unit is called in refusals ("envs").
    pub unit: &'static str,
}

#[derive(Default)]
struct Held {
    streams: usize,
    units: usize,
    peers: HashMap<Option<IpAddr>, (usize, usize)>,
}

pub struct Budget {
    caps: Caps,
    held: Mutex<Held>,
}

/// One admitted stream's share; given back on drop.
pub struct Reserved {
    budget: Arc<Budget>,
    peer: Option<IpAddr>,
    units: usize,
}

impl Budget {
    pub fn new(caps: Caps) -> Arc<Self> {
        Arc::new(Budget { caps, held: Mutex::default() })
    }

    /// Reserves one stream carrying `units` for `peer` (`None`: a peer of unknown address,
    /// such as an in-process test client: held under one shared entry).
    pub fn reserve(self: &Arc<Self>, peer: Option<IpAddr>, units: usize) -> Result<Reserved, (Refusal, &'static str)> {
        let c = &self.caps;
        let mut h = self.held.lock().unwrap();
        let (ps, pu) = h.peers.get(&peer).copied().unwrap_or((0, 0));
        let who = peer.map_or("this peer".to_string(), |ip| ip.to_string());
        let refuse = |key: &'static str, what: String| {
            (Refusal::Exhausted(format!("{what} ({key}); try again when some close")), key)
        };
        if ps + 1 > c.streams_per_peer.0 {
            return Err(refuse(c.streams_per_peer.1, format!("{who} holds {ps} streams, the most one peer may")));
        }
        if pu + units > c.units_per_peer.0 {
            return Err(refuse(
                c.units_per_peer.1,
                format!(
                    "{who} holds {pu} {unit} and asks for {units}, above the {} one peer may",
                    c.units_per_peer.0,
                    unit = c.unit
                ),
            ));
        }
        if h.streams + 1 > c.streams.0 {
            return Err(refuse(c.streams.1, format!("{} streams are open, the most this server takes", h.streams)));
        }
        if h.units + units > c.units.0 {
            return Err(refuse(
                c.units.1,
                format!(
                    "{} {unit} are attached and {units} more would pass the {} this server takes",
                    h.units,
                    c.units.0,
                    unit = c.unit
                ),
            ));
        }
        h.streams += 1;
        h.units += units;
        let e = h.peers.entry(peer).or_default();
        e.0 += 1;
        e.1 += units;
        Ok(Reserved { budget: self.clone(), peer, units })
    }

    /// Streams and units held now, over all peers.
    pub fn held(&self) -> (usize, usize) {
        let h = self.held.lock().unwrap();
        (h.streams, h.units)
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let mut h = self.budget.held.lock().unwrap();
        h.streams -= 1;
        h.units -= self.units;
        if let Some(e) = h.peers.get_mut(&self.peer) {
            e.0 -= 1;
            e.1 -= self.units;
            if e.0 == 0 {
                h.peers.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Arc<Budget> {
        Budget::new(Caps {
            streams_per_peer: (2, "s.peer"),
            units_per_peer: (10, "u.peer"),
            streams: (3, "s.all"),
            units: (15, "u.all"),
            unit: "envs",
        })
    }

    #[test]
    fn each_cap_refuses_with_its_key_and_a_dropped_stream_gives_its_share_back() {
        let b = budget();
        let (a, c) = (Some("10.0.0.1".parse().unwrap()), Some("10.0.0.2".parse().unwrap()));
        let a1 = b.reserve(a, 4).unwrap();
        let err = |r: Result<Reserved, (Refusal, &'static str)>| r.err().map(|(r, k)| (r.code(), k));
        assert_eq!(err(b.reserve(a, 7)), Some((tonic::Code::ResourceExhausted, "u.peer")));
        let _a2 = b.reserve(a, 6).unwrap();
        assert_eq!(err(b.reserve(a, 1)), Some((tonic::Code::ResourceExhausted, "s.peer")));
        let _c1 = b.reserve(c, 5).unwrap();
        assert_eq!(err(b.reserve(c, 1)), Some((tonic::Code::ResourceExhausted, "s.all")));
        assert_eq!(b.held(), (3, 15));
        drop(a1);
        assert_eq!(err(b.reserve(c, 5)), Some((tonic::Code::ResourceExhausted, "u.all")));
        let _c2 = b.reserve(c, 0).unwrap();
        assert_eq!(b.held(), (3, 11));
    }
}
