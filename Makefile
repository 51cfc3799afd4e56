# camrelay build: `make help` lists the targets. Quiet unless V=1; warnings are errors.
#
# Every module's objects go into one static library (build/libcamrelay.a); each program in
# cmd/ links against it and the linker picks what that program uses. Generated protobuf-c
# code lives in build/gen/ and is never committed.

V ?= 0
Q := $(if $(filter 1,$(V)),,@)
say = $(if $(filter 1,$(V)),,@printf '  %-6s %s\n' $(1) $(2);)

BUILD   ?= build
PREFIX  ?= /usr/local
CC      ?= gcc
CXX     ?= g++

SSL_CFLAGS := -I/usr/include/android
SSL_LIBDIR := /usr/lib/x86_64-linux-gnu/android
SSL_LIBS   := -L$(SSL_LIBDIR) -Wl,-rpath,$(SSL_LIBDIR) -lssl -lcrypto -lstdc++

OPT      ?= -O2 -g
SAN      ?=
CFLAGS   := $(OPT) $(SAN) -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
            -Wformat=2 -Wno-format-nonliteral -D_GNU_SOURCE -pthread
CPPFLAGS := -MMD -MP $(SSL_CFLAGS) -I. -I$(BUILD)/gen
LDFLAGS  := $(SAN) -pthread
LDLIBS   := $(SSL_LIBS) -luring -lprotobuf-c -lsqlite3 -linih -ljansson -lmicrohttpd -lm

PROTOS    := $(wildcard proto/*.proto)
PROTO_C   := $(patsubst proto/%.proto,$(BUILD)/gen/proto/%.pb-c.c,$(PROTOS))
PROTO_H   := $(PROTO_C:.c=.h)
LIB_SRCS  := $(wildcard common/*.c relay/*.c control/*.c agent/*.c)
LIB_OBJS  := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRCS)) $(PROTO_C:.c=.o)
LIB       := $(BUILD)/libcamrelay.a

PROGRAMS  := $(patsubst cmd/%.c,$(BUILD)/bin/%,$(wildcard cmd/*.c))
TEST_SRCS := $(wildcard tests/*/test_*.c)
TEST_SUPPORT := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tests/support/*.c))
TESTS     := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))

.PHONY: all test unit e2e package-test asan bench clean install deps help deb image
.DEFAULT_GOAL := all
# Keep intermediate objects (test support, generated code) so rebuilds stay incremental.
.SECONDARY:

all: $(PROGRAMS) $(TESTS)

help:
	@echo "make            build programs (build/bin) and unit tests"
	@echo "make test       unit tests, then the end-to-end tests (root: network namespaces)"
	@echo "make unit       cmocka unit tests only"
	@echo "make e2e        end-to-end tests only"
	@echo "make package-test  build, lint, install, remove and purge the .deb (root)"
	@echo "make asan       build with AddressSanitizer+UBSan into build-asan/ and run the unit tests"
	@echo "                (the kTLS ones again under Debian's kernel in QEMU)"
	@echo "make bench      micro-benchmarks (Google Benchmark) and the capacity run of"
	@echo "                camrelay-bench against direct TCP and haproxy, then 10,000 cameras"
	@echo "                through a relay restart (~12 min; build/bench/)"
	@echo "make install    install programs into \$$(PREFIX)/bin (PREFIX=$(PREFIX))"
	@echo "make clean      remove build outputs"
	@echo "make deps       install build/test dependencies from Debian (root)"
	@echo "make deb        Debian package build/camrelay_<version>_amd64.deb (packaging/deb)"
	@echo "make image      bootable appliance image in build/image (packaging/image; root)"
	@echo "V=1             show full commands"

$(BUILD)/gen/proto/%.pb-c.c $(BUILD)/gen/proto/%.pb-c.h: proto/%.proto
	$(call say,PROTOC,$<)mkdir -p $(BUILD)/gen && protoc-c --c_out=$(BUILD)/gen $<

# Every object may include generated headers: build them first.
$(BUILD)/%.o: %.c | $(PROTO_H)
	$(call say,CC,$<)mkdir -p $(dir $@) && $(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/gen/proto/%.pb-c.o: $(BUILD)/gen/proto/%.pb-c.c
	$(call say,CC,$<)$(CC) $(CPPFLAGS) $(filter-out -Wshadow,$(CFLAGS)) -c $< -o $@

$(LIB): $(LIB_OBJS)
	$(call say,AR,$@)rm -f $@ && ar rcs $@ $^

# camrelay-bench's modules live in bench/ (the load generator is not part of the product).
$(BUILD)/bin/camrelay-bench: $(patsubst %.c,$(BUILD)/%.o,$(wildcard bench/capacity*.c))

$(BUILD)/bin/%: $(BUILD)/cmd/%.o $(LIB)
	$(call say,LD,$@)mkdir -p $(dir $@) && $(CC) $(LDFLAGS) $(filter %.o,$^) $(LIB) -o $@ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_SUPPORT) $(LIB)
	$(call say,LD,$@)mkdir -p $(dir $@) && $(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS) -lcmocka

unit: $(TESTS)
	$(Q)BUILD=$(BUILD) tests/run-unit.sh $(TESTS)

e2e: $(PROGRAMS)
	$(Q)BUILD=$(BUILD) tests/e2e/run-all.sh

package-test:
	$(Q)if [ "$$(id -u)" -eq 0 ]; then tests/packaging/test_deb.sh; \
	else echo "package test: skipped (needs root: it installs and purges the .deb)"; fi

test: unit e2e package-test

# The kTLS branch runs only under a kernel with TLS: Debian's, in QEMU (tests/vm).
ASAN_KTLS_TESTS := build-asan/tests/relay/test_ktls build-asan/tests/relay/test_relay
asan:
	$(Q)$(MAKE) --no-print-directory BUILD=build-asan OPT="-O1 -g" \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" unit
	$(Q)echo "=== kTLS under Debian's kernel (QEMU): $(ASAN_KTLS_TESTS)"
	$(Q)tests/vm/kernel-vm.sh env BUILD=build-asan UNIT_NO_SKIP=1 tests/run-unit.sh $(ASAN_KTLS_TESTS)

bench: $(PROGRAMS)
	$(Q)bench/run-micro.sh
	$(Q)bench/run-capacity.sh
	$(Q)bench/run-restart.sh

install: $(PROGRAMS)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/bin

deps:
	scripts/install-deps.sh

deb:
	$(Q)packaging/deb/build.sh

image:
	$(Q)packaging/image/build.sh

clean:
	rm -rf build build-asan

# Dependency files sit one or two folders below the build dir (build/relay/x.d,
# build/tests/relay/x.d); other trees under build/ (the appliance image) are not ours.
-include $(wildcard $(BUILD)/*/*.d $(BUILD)/*/*/*.d)
