"""Small helpers shared by gan_lab modules that own no concept of their own."""
