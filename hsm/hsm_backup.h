/*
 * hsm_backup - keys must outlive disks: a password-encrypted copy of the
 * embedded SoftHSM2 token (its files, which hold the keys already
 * encrypted under the token's PINs) together with the instance's PIN
 * files, and the way back.
 *
 * Format: CMS EnvelopedData (RFC 5652) with one password recipient
 * (PWRI, RFC 3211: PBKDF2-HMAC-SHA256, 200,000 iterations, AES-256 key
 * wrap), AES-256-CBC content, PEM armour.  Any OpenSSL can open it:
 * `openssl cms -decrypt -inform PEM -pwri_password PASS -in FILE`.  The
 * content is a small archive: "SGBACKUP 1\n", then per file
 * "F <relative path> <size>\n" and the bytes, then "END <sha256 hex of
 * everything before END>\n" (CBC has no integrity of its own).
 *
 * Consistency: files are read while holding the instance's admin lock
 * (hsm/admin.lock, which every sealctl write takes) and, per object, a
 * shared lock on SoftHSM2's own .lock file, so a backup taken while the
 * daemon runs is a token SoftHSM2 could have left.
 *
 * A hardware HSM is backed up with its vendor's tools (key wrap or
 * cloning under the vendor's rules); these functions refuse a token that
 * is not the instance's SoftHSM2 (docs/HSM.md).
 *
 * Trusts: its paths (from the config).  Does not trust the backup file:
 * every path inside is checked (relative, no "..", only tokens/, pin,
 * so-pin), sizes are bounded, and nothing is written until the whole
 * archive decrypted and its digest matched.
 */
#ifndef SEALGATE_HSM_BACKUP_H
#define SEALGATE_HSM_BACKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* hsm_dir is the instance's DIR/hsm (holding tokens/, pin, so-pin). */
int hsm_backup_write(const char *hsm_dir, const char *out_path, const char *password, char *err,
                     size_t errlen);

/*
 * Put a backup back into hsm_dir.  If hsm_dir/tokens already holds a
 * token, refuse (SG_EEXIST) unless replace: then the current token folder
 * and PIN files are moved aside to hsm_dir/replaced-TIME-XXXXXX/ (never
 * deleted).  The restored files get the owners of those they replace.
 * Nothing is left behind on failure (the staging folder holds the PIN).
 * The caller makes sure no daemon runs on the instance.
 */
int hsm_backup_restore(const char *hsm_dir, const char *in_path, const char *password, bool replace,
                       char *err, size_t errlen);

/*
 * Give hsm_dir/tokens, its token folders and their files to uid:gid (root
 * only).  Never follows a symlink (every step is an O_NOFOLLOW dirfd and
 * fchownat(AT_SYMLINK_NOFOLLOW)), skips anything that is not a folder or a
 * regular file, and with only_root touches only root-owned entries (the
 * ones a root sealctl just created).  The token folder may belong to a
 * less trusted user: this is how root changes it safely.
 */
int hsm_token_chown(const char *hsm_dir, uid_t uid, gid_t gid, bool only_root, char *err,
                    size_t errlen);

/* Take hsm_dir/admin.lock (flock, exclusive; waits).  Returns an fd to
 * close to release it, or a negative enum sgerr. */
int hsm_admin_lock(const char *hsm_dir);

#endif
