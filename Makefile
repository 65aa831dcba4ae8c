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

$(LIB): Cargo.toml Cargo.lock $(wildcard src/*.rs)
	cargo build --release
	install -D -m0755 target/release/libkong_keyring.so $(LIB)

build: deps $(LIB)

test: build
	@scripts/test.sh

bench: build
	@scripts/bench.sh

demo: build
	@scripts/demo.sh

.PHONY: demo-openresty
demo-openresty: build
	@scripts/demo-openresty.sh

lint:
	cargo clippy --all-targets --no-default-features -- -D warnings

clean:
	rm -rf target lib .tmp
