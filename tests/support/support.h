/* Helpers shared by the unit tests: temporary directories and throw-away certificates. */
#ifndef TEST_SUPPORT_H
#define TEST_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

/* Creates a fresh temporary directory; path receives it (cap >= 64). Returns 0 or -errno. */
int test_tmpdir(char *path, size_t cap);

/* Removes a directory tree made by test_tmpdir. */
void test_rmtree(const char *path);

/* Writes ca.pem, server.pem and server.key into dir: a CA and a server certificate for the
 * comma-separated subject alternative names in sans (e.g. "IP:127.0.0.1"), made with the
 * openssl command line. Returns 0, or -1 with a message on stderr. */
int test_certs_make(const char *dir, const char *sans);

/* Reserves a TCP port on 127.0.0.1 that refuses connections: a socket bound to it but not
 * listening. Unlike a port found by listening and closing again, no other socket can take it
 * meanwhile (not even as the local port of an outgoing connection, which could then connect to
 * itself). Returns the socket (close it to release the port, e.g. right before listening
 * there) with the port in *port, or -errno. */
int test_port_reserve(uint16_t *port);

#endif
