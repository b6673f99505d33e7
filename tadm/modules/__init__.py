"""The trainable networks of TADM, each in its own file."""
