# kong-keyring: make demo | make test | make bench
SHELL := /bin/bash
ROOT  := $(CURDIR)
LIB   := $(ROOT)/lib/kong/keyring/native.so
export LUA_PATH  := $(ROOT)/lua/?.lua;$(ROOT)/lua/?/init.lua;$(ROOT)/spec/?.lua;;
export LUA_CPATH := $(ROOT)/lib/?.so;;

.PHONY: all deps build test bench demo lint clean

all: build

deps:
	@scripts/deps.sh

# KONG_KEYRING_PORTABLE=1 builds for any x86-64 (scripts/cargo-build.sh); `make clean` first
$(LIB): Cargo.toml Cargo.lock $(wildcard src/*.rs) scripts/cargo-build.sh
	@scripts/cargo-build.sh $(LIB)

build: deps $(LIB)

test: build
	@scripts/test.sh

bench: build
	@scripts/bench.sh

# real Kong (scripts/kong.sh: built once from ../shared/kong-oss) with this rock installed
demo: build
	@scripts/kong.sh install
	@scripts/demo.sh

.PHONY: demo-openresty
demo-openresty: build
	@scripts/demo-openresty.sh

lint:
	cargo clippy --all-targets --no-default-features -- -D warnings

clean:
	rm -rf target lib .tmp
