# The shoal agent image: a static binary on an empty base, so it builds on a Docker with no
# registry. Build the binary first (testnet/build-images does both):
#   RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu
FROM scratch
COPY target/x86_64-unknown-linux-gnu/release/shoal /usr/local/bin/shoal
ENV SHOAL_DATA_DIR=/var/lib/shoal
VOLUME /var/lib/shoal
ENTRYPOINT ["/usr/local/bin/shoal"]
CMD ["agent", "--listen", "0.0.0.0:7946"]
