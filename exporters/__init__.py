"""Export formats for trained models."""
