//! Prune anchors (research/audit.md §2.3 phase B, §6 D4): where retention cut a stream, the
//! chain value it continues from, and the header period the cut applied, signed with the
//! digest key.
//!
//! Verification starts a stream at its anchor, so an unsigned anchor would let anyone who can
//! write the store cut a stream anywhere. Signed, an anchor vouches for the cut, and because it
//! names the period it applied, verification can tell pruning from deletion: the last day cut
//! plus the period must not be later than the day of the cut (what a prune under
//! `header_days` does; the capacity guard's shorter periods are named as applied). Writing an
//! anchor is `retention`'s job, checking it `verify`'s.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::audit::digest::fingerprint;
use crate::audit::event::{Hash, Stream};
use crate::audit::log::AuditLog;
use crate::hex;
use crate::store::StoreError;

/// Where retention cut a stream's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anchor {
    /// The newest sequence number removed.
    pub pruned_through: u64,
    /// The chain value after it, which the next stored event continues.
    pub chain: Hash,
    /// The day bucket it was in.
    pub through_day: u32,
    /// When the cut was made (RFC 3339, UTC).
    pub time: String,
    /// The header period the cut applied, in days (0 for an anchor written before anchors
    /// were signed, whose period is unknown).
    pub header_days: u32,
    pub key_fingerprint: String,
    /// Hex Ed25519 signature of [`Anchor::signing_string`]; empty when unsigned.
    pub signature: String,
}

/// What anchors were before they were signed, as stored by earlier versions.
#[derive(Deserialize)]
struct UnsignedAnchor {
    pruned_through: u64,
    chain: Hash,
    through_day: u32,
    time: String,
}

impl Anchor {
    /// An anchor for a cut through `pruned_through` (whose chain value is `chain`, in bucket
    /// `through_day`) made at `time` under `header_days`, signed by `key`.
    pub fn sign(
        key: &SigningKey,
        origin: &str,
        stream: Stream,
        cut: (u64, Hash, u32),
        time: String,
        header_days: u32,
    ) -> Anchor {
        let (pruned_through, chain, through_day) = cut;
        let mut anchor = Anchor {
            pruned_through,
            chain,
            through_day,
            time,
            header_days,
            key_fingerprint: fingerprint(&key.verifying_key()),
            signature: String::new(),
        };
        anchor.signature = hex::encode(
            &key.sign(anchor.signing_string(origin, stream).as_bytes())
                .to_bytes(),
        );
        anchor
    }

    /// The newline-joined fields the signature covers, in this order.
    pub fn signing_string(&self, origin: &str, stream: Stream) -> String {
        [
            "seawall-audit-anchor-v1",
            origin,
            stream.as_str(),
            &self.pruned_through.to_string(),
            &hex::encode(&self.chain),
            &self.through_day.to_string(),
            &self.time,
            &self.header_days.to_string(),
            &self.key_fingerprint,
        ]
        .join("\n")
    }

    pub fn signed_by(&self, key: &VerifyingKey, origin: &str, stream: Stream) -> bool {
        let Some(signature) = hex::decode(&self.signature)
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .map(|bytes| Signature::from_bytes(&bytes))
        else {
            return false;
        };
        key.verify(self.signing_string(origin, stream).as_bytes(), &signature)
            .is_ok()
    }

    /// The anchor as the digest feed lists it, with what a verifier off the machine needs to
    /// check it (docs/audit-format.md).
    pub fn public_json(&self, origin: &str, stream: Stream) -> serde_json::Value {
        serde_json::json!({
            "origin": origin,
            "stream": stream.as_str(),
            "pruned_through": self.pruned_through,
            "chain": hex::encode(&self.chain),
            "through_day": self.through_day,
            "time": self.time,
            "header_days": self.header_days,
            "key_fingerprint": self.key_fingerprint,
            "signature": self.signature,
        })
    }

    /// An anchor as [`Anchor::public_json`] lists it, with its origin and stream; `None` when
    /// any field is missing or malformed.
    pub fn from_public_json(value: &serde_json::Value) -> Option<(String, Stream, Anchor)> {
        let text = |name: &str| value.get(name)?.as_str().map(str::to_string);
        let number = |name: &str| value.get(name)?.as_u64();
        let anchor = Anchor {
            pruned_through: number("pruned_through")?,
            chain: hex::decode(&text("chain")?)?.try_into().ok()?,
            through_day: u32::try_from(number("through_day")?).ok()?,
            time: text("time")?,
            header_days: u32::try_from(number("header_days")?).ok()?,
            key_fingerprint: text("key_fingerprint")?,
            signature: text("signature")?,
        };
        Some((text("origin")?, Stream::parse(&text("stream")?)?, anchor))
    }

    /// Whether the cut kept its own period: nothing it removed was younger than `header_days`.
    pub fn within_period(&self) -> bool {
        let cut_day = chrono::DateTime::parse_from_rfc3339(&self.time)
            .ok()
            .and_then(|time| u32::try_from(time.timestamp().div_euclid(86_400)).ok());
        cut_day.is_some_and(|day| self.through_day + self.header_days <= day)
    }
}

/// The stream's anchor, if retention has cut it. An anchor in the unsigned format of earlier
/// versions comes back unsigned, for [`sign_unsigned`].
pub fn load(log: &AuditLog, stream: Stream) -> Result<Option<Anchor>, StoreError> {
    let Some(bytes) = log.anchors.get([stream.code()])? else {
        return Ok(None);
    };
    if let Ok(anchor) = postcard::from_bytes::<Anchor>(&bytes) {
        return Ok(Some(anchor));
    }
    let old: UnsignedAnchor = postcard::from_bytes(&bytes)
        .map_err(|_| StoreError::Corrupt(format!("the {} anchor", stream.as_str())))?;
    Ok(Some(Anchor {
        pruned_through: old.pruned_through,
        chain: old.chain,
        through_day: old.through_day,
        time: old.time,
        header_days: 0,
        key_fingerprint: String::new(),
        signature: String::new(),
    }))
}

/// Stores `anchor` and flushes: it must be durable before the events it replaces are gone.
pub fn store(log: &AuditLog, stream: Stream, anchor: &Anchor) -> Result<(), StoreError> {
    log.anchors.insert(
        [stream.code()],
        postcard::to_allocvec(anchor).expect("anchors encode"),
    )?;
    log.store.flush()?;
    Ok(())
}

/// Signs the anchors earlier versions left unsigned, with period 0 (unknown): the machine's
/// key vouches for cuts it made before it signed them. Run once at start. Blocking.
pub fn sign_unsigned(log: &AuditLog) -> Result<usize, StoreError> {
    let mut signed = 0;
    for stream in Stream::ALL {
        let anchor = match load(log, stream) {
            Ok(Some(anchor)) if anchor.signature.is_empty() => anchor,
            Ok(_) => continue,
            // Left for verification to report; not a reason to refuse to start.
            Err(StoreError::Corrupt(what)) => {
                tracing::error!(%what, "an audit retention anchor is unreadable");
                continue;
            }
            Err(e) => return Err(e),
        };
        let resigned = Anchor::sign(
            log.keyring.signing_key(),
            &log.origin,
            stream,
            (anchor.pruned_through, anchor.chain, anchor.through_day),
            anchor.time,
            0,
        );
        let _writing = log.store.writing();
        store(log, stream, &resigned)?;
        signed += 1;
    }
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn anchor(through_day: u32, time: &str, header_days: u32) -> Anchor {
        Anchor::sign(
            &key(1),
            "o",
            Stream::Access,
            (41, [7; 32], through_day),
            time.to_string(),
            header_days,
        )
    }

    #[test]
    fn an_anchor_verifies_only_unaltered_under_its_key_origin_and_stream() {
        let good = anchor(20_000, "2024-10-20T00:00:00Z", 180);
        let public = key(1).verifying_key();
        assert!(good.signed_by(&public, "o", Stream::Access));
        assert!(!good.signed_by(&key(2).verifying_key(), "o", Stream::Access));
        assert!(!good.signed_by(&public, "other", Stream::Access));
        assert!(!good.signed_by(&public, "o", Stream::Security));
        let alterations: [fn(&mut Anchor); 5] = [
            |a| a.pruned_through += 1,
            |a| a.chain[0] ^= 1,
            |a| a.through_day += 1,
            |a| a.header_days = 1,
            |a| a.signature = String::new(),
        ];
        for alter in alterations {
            let mut changed = good.clone();
            alter(&mut changed);
            assert!(
                !changed.signed_by(&public, "o", Stream::Access),
                "{changed:?}"
            );
        }
    }

    #[test]
    fn the_public_form_reads_back_and_still_verifies() {
        let key = key(3);
        let signed = Anchor::sign(
            &key,
            "gw",
            Stream::Access,
            (41, [7; 32], 20_000),
            "2024-10-01T00:00:00Z".to_string(),
            30,
        );
        let public = signed.public_json("gw", Stream::Access);
        let (origin, stream, read) = Anchor::from_public_json(&public).expect("reads back");
        assert_eq!((origin.as_str(), stream), ("gw", Stream::Access));
        assert!(read.signed_by(&key.verifying_key(), &origin, stream));
        let mut damaged = public.clone();
        damaged["chain"] = serde_json::json!("zz");
        assert!(Anchor::from_public_json(&damaged).is_none());
    }

    #[test]
    fn a_cut_within_its_period_passes_and_an_early_one_does_not() {
        // Day 20 000 is 2024-10-04; 180 days later is day 20 180, 2025-04-02.
        assert!(anchor(20_000, "2025-04-02T00:00:01Z", 180).within_period());
        assert!(!anchor(20_000, "2025-04-01T23:59:59Z", 180).within_period());
        assert!(anchor(20_000, "2024-10-05T08:00:00Z", 1).within_period());
        assert!(!anchor(20_000, "not a time", 0).within_period());
    }
}
