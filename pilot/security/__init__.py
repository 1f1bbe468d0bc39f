"""Authentication and access control, as istiod does them.

authn.py      identities (SPIFFE), client-certificate, JWKS and Kubernetes TokenReview authenticators
jwt.py        RS256/ES256 JWT verification against a local JWKS (cryptography)
tls.py        pilot's serving certificate: TLS server contexts that follow file rotation
xdsauth.py    authenticated xDS streams (15012) and PILOT_ENABLE_XDS_IDENTITY_CHECK
debugauth.py  the monitoring server's middleware: loopback / authenticated / namespace-scoped debug access
redact.py     secret material out of every debug answer
envoytls.py   an Envoy bootstrap's TLS xds-grpc cluster with a client certificate (pilot bootstrap --xds-tls)
options.py    the settings (flags, istiod's environment variables) and the objects built from them
"""
