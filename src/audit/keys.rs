//! Keys of the audit trail, kept outside sled in `<data_dir>/keys/` (mode 0700, files 0600).
//!
//! - `kek.<epoch>`: the key-encryption key that wraps every data key stored in sled. sled does
//!   not physically erase removed values, so data keys are never stored in clear; destroying an
//!   epoch's KEK makes every stale copy of a data key wrapped under it useless.
//! - `pseudonym.key`: the HMAC key that turns identifiers into pseudonyms for the subject index,
//!   so no plain identifier is ever a sled key.
//! - `signing.key`: the Ed25519 seed that signs the chain digests (`digest`).
//!
//! Rotating the KEK ([`Keyring::rotate`], then [`Keyring::retire`] once every data key is
//! rewrapped) is what turns an erasure into physical erasure: the copies of destroyed data keys
//! that sled leaves in its files were wrapped under a KEK that no longer exists.
//!
//! Sealing is XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) with a random 24-byte nonce; the
//! nonce leads the ciphertext. It is put together from HChaCha20 (`chacha20`) and `ring`'s
//! ChaCha20-Poly1305, whose assembly seals a short part in a fifth of the time of a portable
//! implementation: the audit writer seals every personal part of every event.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use ed25519_dalek::SigningKey;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

pub type DataKey = [u8; 32];
pub type Pseudonym = [u8; 16];

const NONCE: usize = 24;
const TAG: usize = 16;

pub struct Keyring {
    dir: PathBuf,
    /// The current epoch and its KEK; older epochs are loaded on demand while they exist.
    kek: RwLock<(u32, DataKey)>,
    /// HMAC-SHA256 keyed with the pseudonym key (its key schedule computed once).
    pseudonym_mac: ring::hmac::Key,
    signing: SigningKey,
}

impl Keyring {
    /// Opens (creating when missing) the keys directory under `data_dir`. Blocking.
    pub fn open(data_dir: &Path) -> io::Result<Keyring> {
        let dir = data_dir.join("keys");
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        Keyring::load(dir, load_or_create, load_or_create)
    }

    /// Opens the keys of a store that already holds data. The current KEK and the pseudonym
    /// key must exist (an error names the first that is missing): without them the stored
    /// data keys and pseudonyms mean nothing. A missing signing key is made anew, as `open`
    /// does, because verification reports every digest it did not sign. Blocking.
    pub fn open_existing(data_dir: &Path) -> io::Result<Keyring> {
        let dir = data_dir.join("keys");
        let missing = |path: &Path| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is missing", path.display()),
            )
        };
        if !dir.is_dir() {
            return Err(missing(&dir));
        }
        let required = |path: &Path| match read_key(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(missing(path)),
            other => other,
        };
        Keyring::load(dir, required, load_or_create)
    }

    /// Loads the keys in `dir`: the KEK and pseudonym key through `data`, the signing key
    /// through `signing`.
    fn load(
        dir: PathBuf,
        data: impl Fn(&Path) -> io::Result<DataKey>,
        signing: impl Fn(&Path) -> io::Result<DataKey>,
    ) -> io::Result<Keyring> {
        let epoch = current_epoch(&dir)?.unwrap_or(1);
        let kek = data(&dir.join(format!("kek.{epoch}")))?;
        let pseudonym_mac =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &data(&dir.join("pseudonym.key"))?);
        let signing = SigningKey::from_bytes(&signing(&dir.join("signing.key"))?);
        Ok(Keyring {
            dir,
            kek: RwLock::new((epoch, kek)),
            pseudonym_mac,
            signing,
        })
    }

    /// The key that signs digests.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// Starts a new KEK epoch: new data keys are wrapped under it from now on. Blocking.
    pub fn rotate(&self) -> io::Result<u32> {
        let mut current = self.kek.write().expect("keyring lock");
        let epoch = current.0 + 1;
        let kek = load_or_create(&self.dir.join(format!("kek.{epoch}")))?;
        sync_dir(&self.dir)?;
        *current = (epoch, kek);
        Ok(epoch)
    }

    /// Deletes the KEKs of epochs before `epoch`: every data key still wrapped under them
    /// becomes unreadable for good. Blocking.
    pub fn retire(&self, epoch: u32) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let old = path
                .file_name()
                .and_then(|n| n.to_str()?.strip_prefix("kek.")?.parse::<u32>().ok())
                .is_some_and(|e| e < epoch);
            if old {
                // Best effort against the bytes lingering on disk; full-disk encryption is the
                // backstop on SSDs and copy-on-write filesystems.
                let mut file = OpenOptions::new().write(true).open(&path)?;
                file.write_all(&[0u8; 32])?;
                file.sync_all()?;
                fs::remove_file(&path)?;
                removed += 1;
            }
        }
        sync_dir(&self.dir)?;
        Ok(removed)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The keyed-hash pseudonym of an identifier: stable for the same (kind, value), useless
    /// without the key.
    pub fn pseudonym(&self, kind: &str, value: &str) -> Pseudonym {
        let mut mac = ring::hmac::Context::with_key(&self.pseudonym_mac);
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        mac.sign().as_ref()[..16]
            .try_into()
            .expect("16 of 32 bytes")
    }

    /// Wraps a data key under the current KEK: (epoch, nonce || ciphertext).
    pub fn wrap(&self, kid: &[u8], key: &DataKey) -> (u32, Vec<u8>) {
        let (epoch, kek) = *self.kek.read().expect("keyring lock");
        (epoch, seal(&kek, kid, key))
    }

    /// Unwraps a data key; `None` once its epoch's KEK is gone (or the wrapping was altered).
    pub fn unwrap(&self, kid: &[u8], epoch: u32, wrapped: &[u8]) -> Option<DataKey> {
        let (current, kek) = *self.kek.read().expect("keyring lock");
        let kek = if epoch == current {
            kek
        } else {
            read_key(&self.dir.join(format!("kek.{epoch}"))).ok()?
        };
        open(&kek, kid, wrapped)?.try_into().ok()
    }

    /// When the current KEK was created (its file's modification time). Blocking.
    pub fn epoch_started(&self) -> io::Result<std::time::SystemTime> {
        fs::metadata(self.dir.join(format!("kek.{}", self.epoch())))?.modified()
    }

    /// The current KEK epoch.
    pub fn epoch(&self) -> u32 {
        self.kek.read().expect("keyring lock").0
    }
}

/// A fresh random data key.
pub fn new_data_key() -> DataKey {
    rand::random()
}

/// `nonce || ciphertext || tag` of `plaintext` under `key`, bound to `aad`.
pub fn seal(key: &DataKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE] = rand::random();
    let (cipher, inner_nonce) = xchacha(key, &nonce);
    let mut out = Vec::with_capacity(NONCE + plaintext.len() + TAG);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .seal_in_place_separate_tag(inner_nonce, Aad::from(aad), &mut out[NONCE..])
        .expect("a part is far below ChaCha20's 256 GiB limit");
    out.extend_from_slice(tag.as_ref());
    out
}

/// The plaintext of `sealed`, or `None` when the key, the AAD or the bytes are wrong.
pub fn open(key: &DataKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE + TAG {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE);
    let (cipher, inner_nonce) = xchacha(key, nonce.try_into().ok()?);
    let mut plaintext = ciphertext.to_vec();
    let opened = cipher
        .open_in_place(inner_nonce, Aad::from(aad), &mut plaintext)
        .ok()?
        .len();
    plaintext.truncate(opened);
    Some(plaintext)
}

/// XChaCha20-Poly1305 is ChaCha20-Poly1305 under the subkey HChaCha20 derives from the key and
/// the nonce's first 16 bytes, with the nonce's last 8 bytes after four zero bytes.
fn xchacha(key: &DataKey, nonce: &[u8; NONCE]) -> (LessSafeKey, Nonce) {
    let (derivation, rest) = nonce.split_at(16);
    let subkey =
        chacha20::hchacha::<chacha20::R20>(key.into(), derivation.try_into().expect("16 bytes"));
    let cipher = UnboundKey::new(&CHACHA20_POLY1305, subkey.as_slice())
        .expect("HChaCha20 gives a 32-byte key");
    let mut inner = [0u8; 12];
    inner[4..].copy_from_slice(rest);
    (
        LessSafeKey::new(cipher),
        Nonce::assume_unique_for_key(inner),
    )
}

fn current_epoch(dir: &Path) -> io::Result<Option<u32>> {
    let mut newest = None;
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(epoch) = name
            .to_str()
            .and_then(|n| n.strip_prefix("kek."))
            .and_then(|e| e.parse::<u32>().ok())
        {
            newest = newest.max(Some(epoch));
        }
    }
    Ok(newest)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn read_key(path: &Path) -> io::Result<DataKey> {
    let bytes = fs::read(path)?;
    bytes
        .try_into()
        .map_err(|_| io::Error::other(format!("{} is not a 32-byte key", path.display())))
}

/// The key at `path`, made when there is none. A new key is written and synced under another
/// name first, then linked into place, so a crash leaves the key whole or absent: a short key
/// file would stop every later start, and each erasure makes a new KEK.
fn load_or_create(path: &Path) -> io::Result<DataKey> {
    match read_key(path) {
        Ok(key) => Ok(key),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = new_data_key();
            let mut partial = path.as_os_str().to_owned();
            partial.push(".partial");
            let partial = PathBuf::from(partial);
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial)?;
            file.write_all(&key)?;
            file.sync_all()?;
            // A link, unlike a rename, never replaces a key that appeared meanwhile.
            let linked = fs::hard_link(&partial, path);
            fs::remove_file(&partial)?;
            match linked {
                Ok(()) => Ok(key),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_key(path),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_whole_and_a_crash_leftover_is_replaced() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("kek.2");
        // What a crash while writing the key leaves: a short file under the other name.
        fs::write(dir.path().join("kek.2.partial"), [7u8; 5]).unwrap();
        let key = load_or_create(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), key);
        assert_eq!(load_or_create(&path).unwrap(), key);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["kek.2"]);
        assert_eq!(current_epoch(dir.path()).unwrap(), Some(2));
    }

    /// draft-irtf-cfrg-xchacha-03, A.3.1: the construction is the standard one, so parts
    /// sealed before `ring` did the sealing still open.
    #[test]
    fn sealing_matches_the_xchacha20_poly1305_test_vector() {
        let unhex = |text: &str| crate::hex::decode(text).unwrap();
        let key: DataKey =
            unhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
                .try_into()
                .unwrap();
        let nonce = unhex("404142434445464748494a4b4c4d4e4f5051525354555657");
        let aad = unhex("50515253c0c1c2c3c4c5c6c7");
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one \
            tip for the future, sunscreen would be it.";
        let expected = unhex(concat!(
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb",
            "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452",
            "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9",
            "21f9664c97637da9768812f615c68b13b52e",
            "c0875924c1c7987947deafd8780acf49",
        ));

        let (cipher, inner_nonce) = xchacha(&key, nonce.as_slice().try_into().unwrap());
        let mut sealed = plaintext.to_vec();
        let tag = cipher
            .seal_in_place_separate_tag(inner_nonce, Aad::from(&aad), &mut sealed)
            .unwrap();
        sealed.extend_from_slice(tag.as_ref());
        assert_eq!(sealed, expected);

        let stored = [nonce.as_slice(), &expected].concat();
        assert_eq!(open(&key, &aad, &stored).unwrap(), plaintext);
        let mut flipped = stored.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(open(&key, &aad, &flipped).is_none());
        assert!(open(&key, &aad, &stored[..NONCE + TAG - 1]).is_none());
    }

    #[test]
    fn sealed_data_opens_only_with_its_key_and_aad() {
        let key = new_data_key();
        let sealed = seal(&key, b"aad", b"personal data");
        assert_eq!(
            open(&key, b"aad", &sealed).as_deref(),
            Some(&b"personal data"[..])
        );
        assert!(open(&key, b"other", &sealed).is_none());
        assert!(open(&new_data_key(), b"aad", &sealed).is_none());
        assert_ne!(
            seal(&key, b"aad", b"personal data"),
            sealed,
            "random nonces"
        );
    }

    #[test]
    fn keys_persist_privately_and_wrap_data_keys() {
        let dir = tempfile::TempDir::new().unwrap();
        let ring = Keyring::open(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join("keys/kek.1"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let data_key = new_data_key();
        let (epoch, wrapped) = ring.wrap(b"kid", &data_key);
        let again = Keyring::open(dir.path()).unwrap();
        assert_eq!(again.unwrap(b"kid", epoch, &wrapped), Some(data_key));
        assert_eq!(
            again.pseudonym("email", "a@b.c"),
            ring.pseudonym("email", "a@b.c")
        );
        assert_ne!(
            ring.pseudonym("email", "a@b.c"),
            ring.pseudonym("user_id", "a@b.c")
        );
        assert_eq!(
            again.signing_key().verifying_key(),
            ring.signing_key().verifying_key()
        );
    }

    #[test]
    fn retired_epochs_no_longer_unwrap() {
        let dir = tempfile::TempDir::new().unwrap();
        let ring = Keyring::open(dir.path()).unwrap();
        let data_key = new_data_key();
        let (old, wrapped) = ring.wrap(b"kid", &data_key);
        assert_eq!(ring.rotate().unwrap(), old + 1);
        let (new, rewrapped) = ring.wrap(b"kid", &data_key);
        assert_eq!(new, old + 1);
        assert_eq!(ring.unwrap(b"kid", old, &wrapped), Some(data_key));
        assert_eq!(ring.retire(new).unwrap(), 1);
        assert_eq!(ring.unwrap(b"kid", old, &wrapped), None);
        assert_eq!(ring.unwrap(b"kid", new, &rewrapped), Some(data_key));
        assert_eq!(Keyring::open(dir.path()).unwrap().epoch(), new);
    }
}
