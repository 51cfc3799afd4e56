/* The userspace TLS 1.3 record layer the data path uses when the kernel has no TLS ULP: the
 * same keys kTLS would get (relay/ktls.h derives them), applied by us. Records are opened in
 * place in the buffer they were received into, and the plaintext goes out to the recorder
 * from there (sendmsg with one iovec per record), so a camera's bytes are copied once into
 * userspace by recv and once out by send, with the AEAD in between and nothing else.
 *
 * Only the record layer of an established session: application data, close_notify, and
 * nothing that needs the handshake state. A post-handshake message from the agent (a
 * KeyUpdate, say) is refused with -ENOTSUP and the data connection closes; the agent opens a
 * new one for the next stream. camrelay's agents never send one. */
#ifndef RLY_TLS_RECORD_H
#define RLY_TLS_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/aead.h>

#include "relay/ktls.h"

#define RLY_REC_HEADER 5
#define RLY_REC_TAG 16
/* The largest TLS 1.3 record on the wire: header + 2^14 plaintext + content type + 255 of
 * padding or expansion allowance (RFC 8446 5.2). A buffer this size holds any one record. */
#define RLY_REC_MAX_WIRE (RLY_REC_HEADER + 16384 + 256)
/* What sealing adds to a plaintext of any size up to 2^14: header, content type, tag. */
#define RLY_REC_OVERHEAD (RLY_REC_HEADER + 1 + RLY_REC_TAG)

/* One direction: an AEAD key, the static IV and the next record's sequence number. ready is
 * 1 while the direction may be used; 0 when it was never set, after an error, and after a
 * close_notify was opened or sealed (TLS allows nothing after it). */
struct rly_rec_dir {
    EVP_AEAD_CTX aead;
    uint8_t iv[12];
    uint64_t seq;
    int ready;
};

/* Both directions of one connection. No locking: only the thread that owns the connection
 * (its worker) calls the functions below on it. */
struct rly_rec {
    struct rly_rec_dir rx, tx;
};

/* A stretch of plaintext inside the buffer given to rly_rec_open(). */
struct rly_rec_span {
    uint32_t off, len;
};

/* Sets up both directions from derived material (rly_ktls_derive: tx = what this side
 * sends, rx = what the peer sends, each with its current sequence number). Either may be
 * NULL to leave that direction unset. Returns 0, -EOPNOTSUPP for a cipher it does not know,
 * -EINVAL for malformed material; on failure r is left freed (all zero). r need not be
 * initialised, but must not hold live contexts (rly_rec_free() it first). Allocates nothing.
 * Borrows the material (the caller wipes it). */
int rly_rec_init(struct rly_rec *r, const struct rly_ktls_material *tx,
                 const struct rly_ktls_material *rx);

/* Frees the AEAD contexts and wipes keys, IVs and sequence numbers. Safe on a zeroed or
 * already freed struct. */
void rly_rec_free(struct rly_rec *r);

/* How many bytes the record starting at buf needs in all (header included), once at least
 * RLY_REC_HEADER bytes are there; 0 if len < RLY_REC_HEADER; -EPROTO for a header that is not
 * an application_data record of TLS 1.2 legacy version, -EMSGSIZE if longer than
 * RLY_REC_MAX_WIRE. */
int rly_rec_need(const uint8_t *buf, size_t len);

/* Opens, in place, every whole record at the start of buf[0, len): decrypts each record's
 * body where it lies, checks its tag, strips the content type and padding. For each record
 * carrying application data it appends the plaintext's position to spans (records with an
 * empty plaintext add none). Stops after max_spans spans, at the first partial record, or at
 * a close_notify alert (then *eof = 1; bytes after it are ignored and count as consumed).
 *
 * Returns the bytes consumed (whole records only; the caller keeps buf[ret, len) for the next
 * call, after more bytes arrived behind it) and sets *n_spans; or a negative errno:
 * -EBADMSG (a tag did not verify: tampered or wrong key), -EPROTO (malformed record, bad
 * header, an alert other than close_notify, an all-padding plaintext), -EMSGSIZE (record too
 * long), -ENOTSUP (a post-handshake handshake message), -EINVAL (rx not set, or already failed
 * or closed). After an error the direction is unusable (later calls return -EINVAL) and
 * *n_spans is 0: close the connection. After a close_notify later calls return -EINVAL too.
 * The spans point into buf; the bytes between them (headers, tags, content types) are
 * garbage afterwards. */
int rly_rec_open(struct rly_rec *r, uint8_t *buf, size_t len, struct rly_rec_span *spans,
                 unsigned max_spans, unsigned *n_spans, int *eof);

/* Seals plaintext in[0, len) (len <= 16384) as one application_data record into out, which
 * must have room for len + RLY_REC_OVERHEAD bytes. in may be out + RLY_REC_HEADER (sealing in
 * place); otherwise the two must not overlap. Sealing in place writes the header into the
 * RLY_REC_HEADER bytes before in and the encrypted content type and tag into the
 * 1 + RLY_REC_TAG bytes after in[len - 1], so the plaintext's buffer needs that room on both
 * sides. in is never written to when sealing out of place. Returns the record's size on the
 * wire (len + RLY_REC_OVERHEAD); -EMSGSIZE if len > 16384 (nothing written, the direction
 * stays usable); -EIO if the AEAD failed; -EINVAL if tx is not set, failed or closed. */
int rly_rec_seal(struct rly_rec *r, uint8_t *out, const uint8_t *in, size_t len);

/* Seals a close_notify alert into out (room for 2 + RLY_REC_OVERHEAD bytes). Returns its size
 * or -EIO / -EINVAL as rly_rec_seal(). Afterwards tx is closed: rly_rec_seal() returns
 * -EINVAL. */
int rly_rec_seal_close_notify(struct rly_rec *r, uint8_t *out);

#endif
