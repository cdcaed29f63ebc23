"""CRM backends behind one protocol: ``local`` (the local database is the CRM) and ``notion``."""
