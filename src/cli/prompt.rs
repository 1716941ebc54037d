//! Where the user's key comes from: an identity file, `GITVAULT_PASSPHRASE`, or a prompt on
//! the terminal. Prompts belong to the command line, not to the library.

use std::io::{self, IsTerminal};
use std::path::Path;

use age::secrecy::SecretString;
use gitvault::crypto::Unlock;
use gitvault::vault::VaultError;

fn reading_failed(source: io::Error) -> VaultError {
    VaultError::Io {
        context: "reading the passphrase".into(),
        source,
    }
}

/// Where the key to open a vault comes from, in order: an identity file (`--identity` or
/// `GITVAULT_IDENTITY_FILE`), `GITVAULT_PASSPHRASE`, a prompt on the terminal.
pub(crate) fn unlock_from_environment(identity_file: Option<&Path>) -> Result<Unlock, VaultError> {
    if let Some(path) = identity_file {
        return Ok(Unlock::from_identity_file(path)?);
    }
    if let Ok(pass) = std::env::var("GITVAULT_PASSPHRASE") {
        return Ok(Unlock::Passphrase(SecretString::from(pass)));
    }
    if io::stdin().is_terminal() {
        let pass = rpassword::prompt_password("vault passphrase: ").map_err(reading_failed)?;
        return Ok(Unlock::Passphrase(SecretString::from(pass)));
    }
    Err(VaultError::NoUnlockMethod)
}

/// The passphrase for a new vault: `GITVAULT_PASSPHRASE`, or asked twice on the terminal.
pub(crate) fn new_passphrase_from_environment() -> Result<SecretString, VaultError> {
    if let Ok(pass) = std::env::var("GITVAULT_PASSPHRASE") {
        if pass.is_empty() {
            return Err(VaultError::BadConfig {
                path: "GITVAULT_PASSPHRASE".into(),
                reason: "the passphrase is empty".into(),
            });
        }
        return Ok(SecretString::from(pass));
    }
    if !io::stdin().is_terminal() {
        return Err(VaultError::NoUnlockMethod);
    }
    let first = rpassword::prompt_password("new vault passphrase: ").map_err(reading_failed)?;
    let second = rpassword::prompt_password("repeat the passphrase: ").map_err(reading_failed)?;
    if first != second || first.is_empty() {
        return Err(VaultError::BadConfig {
            path: "passphrase".into(),
            reason: "the two entries differ or are empty".into(),
        });
    }
    Ok(SecretString::from(first))
}
