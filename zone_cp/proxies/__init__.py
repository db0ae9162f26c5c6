"""What a zone CP does for its proxies: enrollment, certificate renewal, registration, and
each proxy's configuration, sent over the sync library."""
