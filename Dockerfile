# tickpool in containers: a build stage and a slim runtime stage, both Debian 12. Dependencies are
# installed by the same scripts/lib/common.sh that scripts/up and scripts/test use.
# (No Docker engine runs on the development machines: this file is kept thin and untested here.)
FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN bash -c 'ROOT=/src; . scripts/lib/common.sh; install_packages $TP_BUILD_PACKAGES; \
    rm -rf build; build build -Dtests=disabled -Dbuildtype=release'

FROM debian:12-slim
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        libev4 libhiredis0.14 libpq5 libmsgpackc2 libmbedtls14 libmbedx509-1 \
        libmbedcrypto7 libjansson4 libinih1 libargon2-1 ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /app tickpool
WORKDIR /app
COPY --from=build /src/build/tickpool /usr/local/bin/tickpool
COPY --from=build /src/migrations migrations
COPY --from=build /src/config config
COPY --from=build /src/web web
RUN mkdir -p var && chown tickpool var
USER tickpool
EXPOSE 8080 8443
ENTRYPOINT ["tickpool"]
CMD ["serve"]
