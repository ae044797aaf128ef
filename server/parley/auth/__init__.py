"""Authentication: password hashing, JWTs, and the interceptor that checks them."""
