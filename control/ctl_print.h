/* control/ctl_print.h — camrelayctl's output: camera and relay lists as a table for people or
 * as JSON for scripts, and status codes in words. */
#ifndef CTL_PRINT_H
#define CTL_PRINT_H

#include <stdio.h>

#include "proto/camrelay.pb-c.h"

/* Lower-case words for a status ("unknown serial", "permission denied"). Static string. */
const char *ctl_status_words(int status);

/* Table: SERIAL STATE ONLINE LAST-SEEN SITE ENDPOINTS RECORDER BYTES, plus RELAY when
 * with_relay (the dispatcher's view). */
void ctl_print_cameras_table(FILE *out, const Camrelay__MgmtReply *r, int with_relay);

/* Table: NAME ONLINE CAMERAS PUBLIC-ADDRS. */
void ctl_print_relays_table(FILE *out, const Camrelay__MgmtReply *r);

/* JSON array of objects with every CameraInfo field (endpoints as [{service, port, url}]).
 * Returns 0 or -ENOMEM. */
int ctl_print_cameras_json(FILE *out, const Camrelay__MgmtReply *r);

/* JSON array of {name, public_addrs, online, cameras}. Returns 0 or -ENOMEM. */
int ctl_print_relays_json(FILE *out, const Camrelay__MgmtReply *r);

/* Formats a byte count for people ("1.5 GiB"); returns buf. */
const char *ctl_human_bytes(unsigned long long n, char *buf, size_t cap);

#endif
