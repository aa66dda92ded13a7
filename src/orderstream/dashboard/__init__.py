"""The operator's dashboard: sign-in, live order board, order detail and actions, settings, admin."""
