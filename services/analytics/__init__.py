"""Analytics: pipeline events into ClickHouse tables (chDB by default), queried by dashboards."""
